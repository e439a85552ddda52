//! Request ids (`X-Request-Id`): one per request, kept when the client (or a balancer in
//! front) sent a usable one so a trace spans every hop, generated otherwise. The id is
//! forwarded to the backend, written in the access log and in rondo's own error pages, so
//! a user's "request abc failed" leads straight to the log line.
//!
//! Generated ids are 32 lower-case hex digits: a random 64-bit prefix chosen once per
//! process (ids from two processes, or two runs, do not collide) followed by a 64-bit
//! counter (unique within the process). Taking one is a single atomic add: no lock, no
//! system call, no allocation.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The header, lower-case as HTTP/2 requires.
pub const HEADER: &str = "x-request-id";

/// The longest client id kept: 128 bytes holds any UUID, trace id or ULID with room to spare;
/// beyond that a header is more likely abuse than an id, and it ends up in every log line.
pub const MAX_LEN: usize = 128;

/// True when `id` may be kept as this request's id: 1 to [`MAX_LEN`] bytes of letters,
/// digits and `-_.:+/=@`, so it is safe in a log line, a header and an error page.
pub fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(&b))
}

/// A request's id, held inline (no allocation): the client's, or a generated one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Id {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl Id {
    /// A new id, different from every other this process generates.
    pub fn generate() -> Id {
        static PREFIX: OnceLock<[u8; 16]> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // std's hasher keys come from the operating system's random source; written out in
        // hex once.
        let prefix = PREFIX.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            hex(std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish())
        });
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; MAX_LEN];
        buf[..16].copy_from_slice(prefix);
        buf[16..32].copy_from_slice(&hex(n));
        Id { buf, len: 32 }
    }

    /// The client's id, when it is one to keep ([`is_valid`]).
    pub fn from_client(id: &[u8]) -> Option<Id> {
        if !is_valid(id) {
            return None;
        }
        let mut buf = [0u8; MAX_LEN];
        buf[..id.len()].copy_from_slice(id);
        Some(Id { buf, len: id.len() })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only the ASCII bytes `is_valid` allows, or hex digits, are ever stored.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// `word`'s 16 hex digits, most significant first.
fn hex(word: u64) -> [u8; 16] {
    std::array::from_fn(|i| b"0123456789abcdef"[(word >> ((15 - i) * 4)) as usize & 0xf])
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_hex_unique_and_valid_as_client_ids() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| Id::generate().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(is_valid(id.as_bytes()));
        }
    }

    #[test]
    fn client_ids_are_kept_only_when_safe_to_log_and_forward() {
        assert!(is_valid(b"0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(is_valid(b"Root=1-67891233-abcdef012345678912345678"));
        assert!(!is_valid(b""));
        assert!(!is_valid(b"a b"));
        assert!(!is_valid(b"a\"b"));
        assert!(!is_valid(&[b'a'; MAX_LEN + 1]));
        assert_eq!(Id::from_client(b"abc-1").unwrap().as_str(), "abc-1");
        assert!(Id::from_client(b"a b").is_none());
    }
}
