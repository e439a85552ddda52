//! Futures boxed where they are built.
//!
//! `Box::pin(future)` builds the future on the stack, then copies it whole into the new
//! allocation. A future's size is that of its largest state: 2,696 bytes for an HTTP/1.1
//! request's, so every request paid a copy of that size into memory that is usually not in
//! the CPU's cache. Allocating first and building the future in the allocation lets the
//! compiler write only the few fields a new future sets (measured in docs/performance.md,
//! session 18: ~360 fewer instructions per request).

use std::future::Future;
use std::pin::Pin;

/// `Box::pin(make())`, the future built in its allocation rather than copied into it.
///
/// A closure, not the future itself: a future passed as an argument is already built, on the
/// stack, before the call, and the copy is back (measured). That the compiler then builds it
/// in place is an optimisation, not a guarantee; `bench/instructions.sh` shows whether it
/// still does.
#[inline(always)]
pub(super) fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let room = Box::new_uninit();
    Box::into_pin(Box::write(room, make()))
}
