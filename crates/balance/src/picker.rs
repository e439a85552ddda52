//! The selection algorithms, behind one trait and chosen by name.
//!
//! A picker is built from one snapshot of the pool (the backends that may take traffic now
//! and their effective weights) and is immutable afterwards; what changes per request (the
//! round-robin cursor, the random generator) lives in a [`PickState`] shared by the pickers of
//! successive snapshots, so a rebuild keeps the position in the rotation.
//!
//! A picker proposes candidates in its own order and the caller's `accept` closure decides
//! (connection limit, half-open breaker slots, backends already tried by a retry). Candidates
//! the caller refuses are skipped by moving on in the same order, so the others keep their
//! exact proportions; after [`MIN_SKIPS`] refusals (or as many as there are members, if
//! more) a linear scan finds any acceptable backend, so a pick never fails while one exists
//! and never walks a long schedule.
//!
//! Longer than ~500 lines because every algorithm is one arm of the one `Picker` enum (a match,
//! not a trait object, keeps a pick under 10 ns); the heavy ones live in `schedule`, `alias`
//! and `maglev`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::alias::AliasTable;
use crate::backend::Backend;
use crate::error::UnknownAlgorithm;
use crate::fastmod::FastDiv;
use crate::maglev::{MaglevTable, PROBES};
use crate::rng::{SharedRng, below, mix};
use crate::schedule::{Order, Schedule};
use crate::time::Timestamp;

/// The balancing algorithms, by their configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// `round-robin`: backends in list order, weights ignored (the seed's SIMPLE).
    RoundRobin,
    /// `weighted`: classic interleaved weighted round robin (LVS): in round `r` every
    /// backend whose weight is at least `r` gets one request.
    Weighted,
    /// `smooth-weighted`: nginx's smooth weighted round robin, the same sequence as nginx.
    /// With equal weights it is plain round robin. The default, as in nginx.
    #[default]
    SmoothWeighted,
    /// `random`: weighted random (the seed's "weighted"), O(1) by alias table.
    Random,
    /// `least-connections`: fewest requests in flight relative to weight; ties go in
    /// smooth-weighted order, as in nginx's `least_conn`. Exact up to
    /// [`LEAST_CONNECTIONS_WINDOW`] backends, a rotating window of that many beyond.
    LeastConnections,
    /// `p2c`: power of two random choices on the load score (peak-EWMA latency × queue ÷
    /// success rate, divided by weight): adapts to backends of unequal speed.
    P2c,
    /// `consistent-hash`: a key (client address, URI, header…) always goes to the same
    /// backend while it is available, by a weighted Maglev table (see [`crate::maglev`]);
    /// picks without a key follow the smooth-weighted cycle. Keyed picks go through
    /// [`crate::Pool::pick_keyed`].
    ConsistentHash,
}

impl Algorithm {
    /// Every algorithm, in documentation order.
    pub const ALL: [Algorithm; 7] = [
        Algorithm::RoundRobin,
        Algorithm::Weighted,
        Algorithm::SmoothWeighted,
        Algorithm::Random,
        Algorithm::LeastConnections,
        Algorithm::P2c,
        Algorithm::ConsistentHash,
    ];

    /// The configuration names, in the order of [`Algorithm::ALL`].
    pub const NAMES: [&'static str; 7] = [
        "round-robin",
        "weighted",
        "smooth-weighted",
        "random",
        "least-connections",
        "p2c",
        "consistent-hash",
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::Weighted => "weighted",
            Algorithm::SmoothWeighted => "smooth-weighted",
            Algorithm::Random => "random",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::P2c => "p2c",
            Algorithm::ConsistentHash => "consistent-hash",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Algorithm, UnknownAlgorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// Per-pool state that outlives snapshots: the round-robin cursor, the random generator and
/// the requests in flight that bounded-load hashing counts.
#[derive(Debug)]
pub struct PickState {
    cursor: AtomicU64,
    rng: SharedRng,
    /// Requests in flight on the whole pool, counted only by leases of a bounded-load
    /// consistent-hash pool (everything else reads per-backend counters).
    in_flight: AtomicU64,
}

impl PickState {
    /// A state whose cursor starts at `start` and whose generator is seeded with `seed`.
    pub fn new(start: u64, seed: u64) -> PickState {
        PickState {
            cursor: AtomicU64::new(start),
            rng: SharedRng::new(seed),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Counts a request in flight on the pool (see [`AnyPicker::counts_in_flight`]).
    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a request counted by [`PickState::begin`].
    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests counted in flight on the pool.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Takes the next cursor value: one `fetch_add`, shared by every thread.
    #[inline]
    fn next(&self) -> u64 {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }

    /// Moves the cursor on with a load and a store, not a locked instruction: for a picker
    /// that needs a rotating start, not one exact global order (two threads at the same
    /// instant may start at the same place; one thread's sequence is the same as [`next`]'s).
    ///
    /// [`next`]: PickState::next
    #[inline]
    fn step(&self) -> u64 {
        let at = self.cursor.load(Ordering::Relaxed);
        self.cursor.store(at.wrapping_add(1), Ordering::Relaxed);
        at
    }

    /// A start offset drawn from `seed`, below 2^32 so the cursor never wraps in practice.
    pub fn random_start(seed: u64) -> u64 {
        mix(seed ^ 0x5bd1_e995) >> 32
    }
}

/// What a pick sees: the snapshot's backends, the shared state, the time.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    /// The snapshot's backends; pickers answer indices into this slice.
    pub backends: &'a [Arc<Backend>],
    /// Cursor and generator.
    pub state: &'a PickState,
    /// Now, for latency decay.
    pub now: Timestamp,
}

/// One selection algorithm over one snapshot.
pub trait Picker: fmt::Debug + Send + Sync {
    /// Proposes candidates until `accept` takes one, and returns its index in
    /// `ctx.backends`; `None` when every member was refused.
    fn pick<F: FnMut(usize) -> bool>(&self, ctx: &PickContext<'_>, accept: F) -> Option<usize>;
}

/// Refusals a round-robin pick moves past in cycle order before it scans. A heavy backend
/// can own a long run of consecutive slots in the interleaved order (weights 1000 and 1 give
/// a run of 999); skipping the whole run keeps proportions exact but costs one atomic
/// increment per slot. 64 covers every run of weights up to 64 apart and bounds the cost.
pub const MIN_SKIPS: usize = 64;

/// The backends a picker chooses among, with their effective (reduced) weights.
#[derive(Debug, Clone)]
struct Members {
    /// Indices into the snapshot's backends.
    ids: Box<[u32]>,
    /// Reduced effective weights: each fits 32 bits (effective weights are `u32`), so a
    /// load (`u32`) times a weight fits 64.
    weights: Box<[u32]>,
    count: FastDiv,
}

impl Members {
    fn new(ids: &[u32], weights: &[u64]) -> Members {
        Members {
            ids: ids.into(),
            weights: weights
                .iter()
                .map(|&w| u32::try_from(w).unwrap_or(u32::MAX))
                .collect(),
            count: FastDiv::new(ids.len() as u64),
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    /// The first member from position `start` on that `accept` takes.
    fn scan<F: FnMut(usize) -> bool>(&self, start: u64, mut accept: F) -> Option<usize> {
        let start = self.count.rem(start) as usize;
        let (tail, head) = self.ids.split_at(start);
        head.iter()
            .chain(tail)
            .map(|&i| i as usize)
            .find(|&i| accept(i))
    }
}

/// `round-robin`, `weighted` and `smooth-weighted`: a precomputed cycle walked by the cursor.
#[derive(Debug, Clone)]
pub struct Cycle {
    schedule: Schedule,
    members: Members,
}

impl Picker for Cycle {
    #[inline]
    fn pick<F: FnMut(usize) -> bool>(&self, ctx: &PickContext<'_>, mut accept: F) -> Option<usize> {
        let mut cursor = 0;
        for _ in 0..self.members.len().max(MIN_SKIPS) {
            cursor = ctx.state.next();
            let i = self.schedule.at(cursor) as usize;
            if accept(i) {
                return Some(i);
            }
        }
        self.members.scan(cursor, accept)
    }
}

/// `random`: weighted draws from an alias table.
#[derive(Debug, Clone)]
pub struct WeightedRandom {
    table: AliasTable,
    members: Members,
}

impl Picker for WeightedRandom {
    #[inline]
    fn pick<F: FnMut(usize) -> bool>(&self, ctx: &PickContext<'_>, mut accept: F) -> Option<usize> {
        let mut r = 0;
        for _ in 0..self.members.len() {
            let (r1, r2) = ctx.state.rng.next_pair();
            r = r1;
            let i = self.table.draw(r1, r2) as usize;
            if accept(i) {
                return Some(i);
            }
        }
        self.members.scan(r, accept)
    }
}

/// Refusals remembered by the adaptive pickers before they fall back to a scan.
const ADAPTIVE_TRIES: usize = 3;

/// Members a `least-connections` pick compares. Up to this many backends the choice is
/// exact, as nginx's `least_conn`; in larger pools each pick compares this many consecutive
/// members starting at a position that moves in smooth-weighted order, so every backend is
/// compared in turn and a pick stays O(1) (nginx's loop costs 5 µs a pick at 10,000
/// backends). 32 loads fit in a few cache lines.
pub const LEAST_CONNECTIONS_WINDOW: usize = 32;

/// `least-connections`.
#[derive(Debug, Clone)]
pub struct LeastConnections {
    /// Smooth-weighted cycle over member positions: where each scan starts, so ties follow
    /// the weights.
    order: Schedule,
    members: Members,
}

impl LeastConnections {
    /// Position of the member with the lowest in-flight count per unit of weight among the
    /// window starting at `start`, skipping `refused`; the first wins ties.
    #[inline]
    fn least_loaded(
        &self,
        ctx: &PickContext<'_>,
        start: usize,
        refused: &[usize],
    ) -> Option<usize> {
        let n = self.members.len();
        let window = n.min(LEAST_CONNECTIONS_WINDOW);
        let mut best: Option<(usize, u64, u64)> = None;
        let mut pos = start;
        for _ in 0..window {
            if !refused.contains(&pos) {
                let load = u64::from(ctx.backends[self.members.ids[pos] as usize].in_flight());
                let w = u64::from(self.members.weights[pos]);
                // load / w < best_load / best_w, by cross-multiplication: each product of a
                // 32-bit load and a 32-bit weight fits 64 bits.
                let better = best.is_none_or(|(_, bl, bw)| load * bw < bl * w);
                if better {
                    best = Some((pos, load, w));
                }
            }
            pos += 1;
            if pos == n {
                pos = 0;
            }
        }
        best.map(|(pos, _, _)| pos)
    }
}

impl Picker for LeastConnections {
    fn pick<F: FnMut(usize) -> bool>(&self, ctx: &PickContext<'_>, mut accept: F) -> Option<usize> {
        let start = self.order.at(ctx.state.step()) as usize;
        let mut refused = [usize::MAX; ADAPTIVE_TRIES];
        for attempt in 0..ADAPTIVE_TRIES.min(self.members.len()) {
            let pos = self.least_loaded(ctx, start, &refused[..attempt])?;
            let id = self.members.ids[pos] as usize;
            if accept(id) {
                return Some(id);
            }
            refused[attempt] = pos;
        }
        self.members.scan(start as u64, accept)
    }
}

/// `p2c`: two distinct members drawn at random, the one with the lower load score per unit
/// of weight wins (Mitzenmacher's power of two choices; the score is Finagle's peak EWMA).
#[derive(Debug, Clone)]
pub struct PowerOfTwo {
    members: Members,
}

impl PowerOfTwo {
    /// The load score of the member at `pos`, and its weight.
    #[inline]
    fn load(&self, ctx: &PickContext<'_>, pos: usize) -> (f64, f64) {
        let b = &ctx.backends[self.members.ids[pos] as usize];
        (
            b.stats.load_score(ctx.now),
            f64::from(self.members.weights[pos]),
        )
    }
}

impl Picker for PowerOfTwo {
    fn pick<F: FnMut(usize) -> bool>(&self, ctx: &PickContext<'_>, mut accept: F) -> Option<usize> {
        let n = self.members.len() as u64;
        let mut r = 0;
        if n == 1 {
            let id = self.members.ids[0] as usize;
            return accept(id).then_some(id);
        }
        for _ in 0..ADAPTIVE_TRIES {
            let (r1, r2) = ctx.state.rng.next_pair();
            r = r1;
            let a = below(r1, n) as usize;
            let mut b = below(r2, n - 1) as usize;
            if b >= a {
                b += 1;
            }
            // score_b / weight_b < score_a / weight_a, by cross-multiplication: two
            // divisions were a third of a pick.
            let ((score_a, weight_a), (score_b, weight_b)) = (self.load(ctx, a), self.load(ctx, b));
            let (first, second) = if score_b * weight_a < score_a * weight_b {
                (b, a)
            } else {
                (a, b)
            };
            for pos in [first, second] {
                let id = self.members.ids[pos] as usize;
                if accept(id) {
                    return Some(id);
                }
            }
        }
        self.members.scan(r, accept)
    }
}

/// What a consistent-hash picker is built from besides its members: the table (reused
/// while the tier's membership and weights are unchanged) and the bounded-load factor.
#[derive(Debug, Clone)]
pub(crate) struct HashSetup {
    /// The Maglev table over the whole tier, available or not.
    pub(crate) table: Arc<MaglevTable>,
    /// Bounded-load factor in thousandths (1250 for 1.25); `None` for no bound.
    pub(crate) bound: Option<u64>,
}

/// `consistent-hash`: keyed picks by Maglev table with optional bounded load; unkeyed picks
/// by the smooth-weighted cycle.
#[derive(Debug, Clone)]
pub struct ConsistentHash {
    table: Arc<MaglevTable>,
    /// Table weight of each snapshot backend that is in rotation, by snapshot index; 0 for
    /// the others (not in rotation, or not in the table's tier).
    rotation: Box<[u64]>,
    /// Sum of `rotation`: the weight the bounded load is shared over.
    rotation_total: u64,
    bound: Option<u64>,
    /// Picks without a key.
    cycle: Cycle,
}

impl ConsistentHash {
    fn new(setup: HashSetup, ids: &[u32], cycle: Cycle) -> ConsistentHash {
        let size = setup
            .table
            .members()
            .iter()
            .map(|&(i, _, _)| i as usize + 1)
            .chain(ids.iter().map(|&i| i as usize + 1))
            .max()
            .unwrap_or(0);
        let mut chosen = vec![false; size];
        for &i in ids {
            chosen[i as usize] = true;
        }
        let mut rotation = vec![0u64; size];
        for &(i, _, w) in setup.table.members() {
            if chosen[i as usize] {
                rotation[i as usize] = w;
            }
        }
        ConsistentHash {
            rotation_total: rotation.iter().sum(),
            rotation: rotation.into_boxed_slice(),
            table: setup.table,
            bound: setup.bound,
            cycle,
        }
    }

    /// True when backend `i` may take one more request under the bounded load: its
    /// in-flight count is below `factor × (pool in flight + 1) × weight / rotation weight`,
    /// rounded up.
    #[inline]
    fn under_bound(&self, ctx: &PickContext<'_>, i: usize) -> bool {
        let Some(factor) = self.bound else {
            return true;
        };
        let load = u128::from(ctx.backends[i].in_flight());
        let total = u128::from(ctx.state.in_flight()) + 1;
        let weight = u128::from(self.rotation.get(i).copied().unwrap_or(0));
        // load < ceil(x) <=> load < x for a whole `load`; x = factor/1000 × total × w / W.
        load * 1000 * u128::from(self.rotation_total) < u128::from(factor) * total * weight
    }

    /// The backend for `key`: its first choice in the table if that one can take the
    /// request, else its next choices; after [`PROBES`] choices, the members in order from
    /// the key's position (first within the bound, then regardless of it, so a pick never
    /// fails while a member accepts).
    #[inline]
    pub fn pick_keyed<F: FnMut(usize) -> bool>(
        &self,
        ctx: &PickContext<'_>,
        key: u64,
        mut accept: F,
    ) -> Option<usize> {
        let in_rotation = |i: usize| self.rotation.get(i).is_some_and(|&w| w > 0);
        for i in self.table.probes(key).take(PROBES) {
            if in_rotation(i) && self.under_bound(ctx, i) && accept(i) {
                return Some(i);
            }
        }
        let members = &self.cycle.members;
        members
            .scan(key, |i| self.under_bound(ctx, i) && accept(i))
            .or_else(|| members.scan(key, accept))
    }
}

impl Picker for ConsistentHash {
    #[inline]
    fn pick<F: FnMut(usize) -> bool>(&self, ctx: &PickContext<'_>, accept: F) -> Option<usize> {
        self.cycle.pick(ctx, accept)
    }
}

/// Any picker, chosen by [`Algorithm`]: static dispatch on the hot path.
#[derive(Debug, Clone)]
pub enum AnyPicker {
    /// No backend can take traffic.
    Empty,
    /// A round-robin cycle.
    Cycle(Cycle),
    /// Weighted random.
    Random(WeightedRandom),
    /// Least connections.
    LeastConnections(LeastConnections),
    /// Power of two choices.
    PowerOfTwo(PowerOfTwo),
    /// Consistent hashing.
    ConsistentHash(ConsistentHash),
}

impl AnyPicker {
    /// Builds the picker for `algorithm` over backends `ids` (indices into the snapshot) with
    /// reduced weights `weights`; `hash` is the table of a `consistent-hash` pool (without
    /// one it picks as `smooth-weighted`).
    pub(crate) fn build(
        algorithm: Algorithm,
        ids: &[u32],
        weights: &[u64],
        hash: Option<HashSetup>,
    ) -> AnyPicker {
        if ids.is_empty() {
            return AnyPicker::Empty;
        }
        let members = Members::new(ids, weights);
        let cycle = |order| {
            AnyPicker::Cycle(Cycle {
                schedule: Schedule::build(order, ids, weights),
                members: members.clone(),
            })
        };
        match algorithm {
            Algorithm::RoundRobin => cycle(Order::Listed),
            Algorithm::Weighted => cycle(Order::Interleaved),
            Algorithm::SmoothWeighted => cycle(Order::Smooth),
            Algorithm::Random => AnyPicker::Random(WeightedRandom {
                table: AliasTable::new(ids, weights),
                members,
            }),
            Algorithm::LeastConnections => {
                let positions: Vec<u32> = (0..ids.len() as u32).collect();
                let order = Schedule::build(Order::Smooth, &positions, weights);
                AnyPicker::LeastConnections(LeastConnections { order, members })
            }
            Algorithm::P2c => AnyPicker::PowerOfTwo(PowerOfTwo { members }),
            Algorithm::ConsistentHash => {
                let smooth = Cycle {
                    schedule: Schedule::build(Order::Smooth, ids, weights),
                    members,
                };
                match hash {
                    Some(setup) => {
                        AnyPicker::ConsistentHash(ConsistentHash::new(setup, ids, smooth))
                    }
                    None => AnyPicker::Cycle(smooth),
                }
            }
        }
    }

    /// Picks for a request with a key (its hash): a consistent-hash picker sends equal keys
    /// to the same backend; every other algorithm ignores the key.
    #[inline]
    pub fn pick_keyed<F: FnMut(usize) -> bool>(
        &self,
        ctx: &PickContext<'_>,
        key: u64,
        accept: F,
    ) -> Option<usize> {
        match self {
            AnyPicker::ConsistentHash(p) => p.pick_keyed(ctx, key, accept),
            _ => self.pick(ctx, accept),
        }
    }

    /// True when leases must be counted in [`PickState`]: a consistent-hash picker with a
    /// bounded load compares each backend's load with the pool's.
    pub fn counts_in_flight(&self) -> bool {
        matches!(self, AnyPicker::ConsistentHash(p) if p.bound.is_some())
    }

    /// The table of a consistent-hash picker, to reuse in the next snapshot.
    pub(crate) fn hash_table(&self) -> Option<&Arc<MaglevTable>> {
        match self {
            AnyPicker::ConsistentHash(p) => Some(&p.table),
            _ => None,
        }
    }

    /// How many picks make one full cycle of a round-robin schedule (`None` for the other
    /// algorithms and for an empty picker).
    pub fn cycle_len(&self) -> Option<u128> {
        match self {
            AnyPicker::Cycle(c) | AnyPicker::ConsistentHash(ConsistentHash { cycle: c, .. }) => {
                Some(c.schedule.cycle_len())
            }
            _ => None,
        }
    }

    /// True when a round-robin schedule is stored slot by slot, i.e. follows the exact
    /// nginx (or interleaved, or list) order rather than the spread order used for cycles
    /// longer than [`crate::schedule::MAX_TABLE_SLOTS`].
    pub fn is_exact_order(&self) -> bool {
        match self {
            AnyPicker::Cycle(c) | AnyPicker::ConsistentHash(ConsistentHash { cycle: c, .. }) => {
                c.schedule.is_table()
            }
            _ => false,
        }
    }
}

impl Picker for AnyPicker {
    #[inline]
    fn pick<F: FnMut(usize) -> bool>(&self, ctx: &PickContext<'_>, accept: F) -> Option<usize> {
        match self {
            AnyPicker::Empty => None,
            AnyPicker::Cycle(p) => p.pick(ctx, accept),
            AnyPicker::Random(p) => p.pick(ctx, accept),
            AnyPicker::LeastConnections(p) => p.pick(ctx, accept),
            AnyPicker::PowerOfTwo(p) => p.pick(ctx, accept),
            AnyPicker::ConsistentHash(p) => p.pick(ctx, accept),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
        }
        let err = "fastest".parse::<Algorithm>().unwrap_err().to_string();
        assert!(
            err.contains("fastest") && err.contains("least-connections"),
            "{err}"
        );
        assert_eq!(Algorithm::default(), Algorithm::SmoothWeighted);
    }
}
