//! The program's clock: tokio's monotonic time mapped onto the `balance` crate's
//! [`Timestamp`]s, so that `tokio::time::pause()` in tests moves every state machine too.

use balance::Timestamp;
use tokio::time::Instant;

/// Converts instants to timestamps relative to a fixed origin.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Now, as a timestamp.
    #[inline]
    pub fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// `instant` as a timestamp.
    #[inline]
    pub fn at(&self, instant: Instant) -> Timestamp {
        Timestamp::from_elapsed(instant.saturating_duration_since(self.origin))
    }

    /// The instant of a timestamp.
    pub fn instant(&self, t: Timestamp) -> Instant {
        self.origin + std::time::Duration::from_nanos(t.as_nanos())
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}
