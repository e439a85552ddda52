//! The floor relay ([`floor_relay`](floor_relay.rs)) on io_uring instead of readiness: the same
//! pairs of connections and the same bytes copied across unparsed, but every receive and send
//! is a request on one ring, and one `io_uring_enter` submits the batch and waits for the next
//! completions, where the readiness loop makes a system call per receive and per send plus its
//! `epoll_wait`. `bench/proxies.sh` and `bench/proxies-profiles.sh` run it as "floor-uring"
//! with `FLOOR_URING=target/release/examples/floor_relay_uring`, beside the readiness floor,
//! to measure what io_uring could take off the kernel's share of a request (issue #15's idea).
//!
//! ```text
//! cargo build --release --example floor_relay_uring
//! target/release/examples/floor_relay_uring LISTEN BACKEND   # e.g. 127.0.0.1:8080 127.0.0.1:9001
//! ```
//!
//! The ring is set up for one thread (`SINGLE_ISSUER`) that runs completions' work when it
//! asks for completions (`DEFER_TASKRUN`), the setup io_uring's authors recommend for a
//! server's event loop. Each side of a pair has its own 64 KiB buffer (a receive holds its
//! buffer until it completes, so buffers cannot be shared as the readiness floor shares its
//! one), and a side is read again only once what it read has been sent whole.

use std::convert::Infallible;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use anyhow::Context as _;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use rustc_hash::FxHashMap;

mod floor_common;

/// Bytes one receive may take: the readiness floor's read size.
const READ_SIZE: usize = 64 * 1024;

/// Submission queue entries (completions get twice as many).
const RING_ENTRIES: u32 = 4096;

/// The listener's readiness, the one operation that is not a pair's.
const LISTENER: u64 = u64::MAX;

/// What an operation was, in the low bits of its `user_data` (the pair's id above them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A receive on a side (0: the client, 1: the backend).
    Recv(usize),
    /// A send to the other side of what a side received.
    Send(usize),
}

impl Op {
    fn encode(self, pair: u64) -> u64 {
        let code = match self {
            Op::Recv(side) => side as u64,
            Op::Send(side) => 2 + side as u64,
        };
        pair << 2 | code
    }

    fn decode(user_data: u64) -> (u64, Op) {
        let side = (user_data & 1) as usize;
        let op = if user_data & 2 == 0 {
            Op::Recv(side)
        } else {
            Op::Send(side)
        };
        (user_data >> 2, op)
    }
}

/// A client's connection and its own backend connection.
struct Pair {
    /// Side 0 the client, side 1 the backend.
    streams: [TcpStream; 2],
    /// What each side received last; the kernel writes into it while a receive is in flight
    /// and reads from it while its send is, so it lives as long as the pair.
    bufs: [Box<[u8]>; 2],
    /// Of what each side received last: how much, and how much of it is sent.
    received: [usize; 2],
    sent: [usize; 2],
    /// Operations submitted and not completed: the pair (and its buffers) is dropped only
    /// when none is left.
    in_flight: u32,
    closing: bool,
}

fn main() -> anyhow::Result<()> {
    let (listener, backend) = floor_common::listener_and_backend("floor_relay_uring")?;
    match relay(listener, backend)? {}
}

/// The ring and the pairs it serves.
struct Relay {
    ring: IoUring,
    pairs: FxHashMap<u64, Pair>,
    next: u64,
    backend: SocketAddr,
}

/// Relays every client `listener` accepts to a connection of its own to `backend`, until the
/// ring fails.
fn relay(listener: TcpListener, backend: SocketAddr) -> anyhow::Result<Infallible> {
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .context("setting up io_uring (Linux 6.1 or later)")?;
    let mut relay = Relay {
        ring,
        pairs: FxHashMap::default(),
        next: 0,
        backend,
    };
    let poll = opcode::PollAdd::new(types::Fd(listener.as_raw_fd()), libc::POLLIN as u32)
        .multi(true)
        .build()
        .user_data(LISTENER);
    relay.push(&poll)?;
    let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(RING_ENTRIES as usize);
    loop {
        match relay.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e).context("submitting and waiting"),
        }
        done.clear();
        done.extend(
            relay
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(user_data, result, flags) in &done {
            if user_data == LISTENER {
                relay.accept_all(&listener)?;
                if !cqueue::more(flags) {
                    relay.push(&poll)?;
                }
                continue;
            }
            let (pair, op) = Op::decode(user_data);
            relay.completed(pair, op, result)?;
        }
    }
}

impl Relay {
    /// Queues `entry`, submitting what is queued first when the queue is full.
    fn push(&mut self, entry: &squeue::Entry) -> anyhow::Result<()> {
        loop {
            // SAFETY: every entry pushed here points into a pair's buffer (or at nothing,
            // for the listener's poll). The buffers are boxed, so the map growing moves the
            // boxes, not the bytes, and a pair is dropped only when no operation of its is in
            // flight (`in_flight`): the memory outlives every operation that uses it.
            #[allow(unsafe_code)]
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            self.ring.submit().context("submitting a full queue")?;
        }
    }

    /// Accepts every waiting client, connects its backend and starts receiving on both.
    fn accept_all(&mut self, listener: &TcpListener) -> anyhow::Result<()> {
        loop {
            let client = match listener.accept() {
                Ok((client, _)) => client,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    eprintln!("floor_relay_uring: accept: {e}");
                    return Ok(());
                }
            };
            // Loopback: the connection is made before this returns.
            let backend = match TcpStream::connect(self.backend) {
                Ok(backend) => backend,
                Err(e) => {
                    eprintln!("floor_relay_uring: connect to {}: {e}", self.backend);
                    continue;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = backend.set_nodelay(true);
            let id = self.next;
            self.next += 1;
            self.pairs.insert(
                id,
                Pair {
                    streams: [client, backend],
                    bufs: [vec![0; READ_SIZE].into(), vec![0; READ_SIZE].into()],
                    received: [0; 2],
                    sent: [0; 2],
                    in_flight: 0,
                    closing: false,
                },
            );
            self.recv(id, 0)?;
            self.recv(id, 1)?;
        }
    }

    /// Receives on `side` of `id` into its buffer.
    fn recv(&mut self, id: u64, side: usize) -> anyhow::Result<()> {
        let Some(pair) = self.pairs.get_mut(&id) else {
            return Ok(());
        };
        let fd = types::Fd(pair.streams[side].as_raw_fd());
        let buf = &mut pair.bufs[side];
        let entry = opcode::Recv::new(fd, buf.as_mut_ptr(), READ_SIZE as u32)
            .build()
            .user_data(Op::Recv(side).encode(id));
        pair.in_flight += 1;
        self.push(&entry)
    }

    /// Sends to the other side what `side` of `id` received and has not sent yet.
    fn send(&mut self, id: u64, side: usize) -> anyhow::Result<()> {
        let Some(pair) = self.pairs.get_mut(&id) else {
            return Ok(());
        };
        let fd = types::Fd(pair.streams[1 - side].as_raw_fd());
        let rest = &pair.bufs[side][pair.sent[side]..pair.received[side]];
        let entry = opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Op::Send(side).encode(id));
        pair.in_flight += 1;
        self.push(&entry)
    }

    /// What follows an operation's completion: a receive's bytes are sent, a send finished
    /// reads its side again, a failure or an end of stream closes the pair.
    fn completed(&mut self, id: u64, op: Op, result: i32) -> anyhow::Result<()> {
        let Some(pair) = self.pairs.get_mut(&id) else {
            return Ok(());
        };
        pair.in_flight -= 1;
        if pair.closing || result <= 0 {
            self.close(id);
            return Ok(());
        }
        let n = result as usize;
        match op {
            Op::Recv(side) => {
                pair.received[side] = n;
                pair.sent[side] = 0;
                self.send(id, side)
            }
            Op::Send(side) => {
                pair.sent[side] += n;
                if pair.sent[side] < pair.received[side] {
                    self.send(id, side)
                } else {
                    self.recv(id, side)
                }
            }
        }
    }

    /// Ends both connections of `id`: operations still in flight fail or see the end, and
    /// the pair is dropped once the last of them completes.
    fn close(&mut self, id: u64) {
        let Some(pair) = self.pairs.get_mut(&id) else {
            return;
        };
        if !pair.closing {
            pair.closing = true;
            for stream in &pair.streams {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        if pair.in_flight == 0 {
            self.pairs.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    #[test]
    fn operations_name_their_pair_and_side() {
        for op in [Op::Recv(0), Op::Recv(1), Op::Send(0), Op::Send(1)] {
            assert_eq!(Op::decode(op.encode(12_345)), (12_345, op));
        }
    }

    #[test]
    fn bytes_cross_both_ways_unchanged_and_a_close_reaches_the_other_side() {
        floor_common::round_trip_through(|listener, backend| {
            thread::spawn(move || relay(listener, backend));
        });
    }
}
