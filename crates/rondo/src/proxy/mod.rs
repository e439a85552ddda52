//! The HTTP proxy: listeners, worker threads, and the forwarding path.
//!
//! Workers are threads that each run a single-threaded tokio runtime (nginx's model: one
//! event loop per core, no work stealing, nothing shared on the request path but the
//! upstreams' lock-free snapshots). Each worker accepts from the same listening sockets and
//! keeps its own pool of idle backend connections and buffers, so taking either is a
//! `RefCell` borrow, never a lock. A separate control thread runs the timer loops.
//!
//! The HTTP/1.1 path is written directly on `httparse` and tokio sockets (see [`h1`]): a
//! request is parsed and rewritten in one pass, bodies stream through one buffer, and no
//! allocation happens per request once buffers are warm.
//!
//! Start-up, the control thread and reload live in [`crate::runtime`]: it binds the sockets
//! with [`bind`], builds each listener's [`Frontend`], starts [`run_worker`] threads and hands them
//! listeners as [`FrontendSocket`]s. This module only accepts, parses and forwards.
//!
//! Where things are: [`listen`] (the listening sockets and their options), [`frontend`] (a
//! listener's routing table and counters), [`worker`] (the per-thread runtime, its pools and
//! accept loop),
//! [`connection`] (admission and protocol dispatch of one client connection), [`forward`]
//! (the one forwarding policy every protocol shares), [`room`] and [`parked`] (idle client
//! connections: making room, and keeping them without a task), then one file per protocol: [`h1`],
//! [`h2`], [`tcp`], and HTTP/2 to backends ([`h2_upstream`], [`relay`]).

mod affinity;
mod body;
mod buffers;
mod chunked;
mod connection;
mod connpool;
mod dial;
mod forward;
mod frontend;
mod h1;
mod h1_upstream;
mod h2;
mod h2_preface;
mod h2_upstream;
mod head;
mod headers;
mod in_place;
mod listen;
pub(crate) mod memory;
mod parked;
pub(crate) mod protocol;
mod redirect;
mod relay;
mod relay_body;
mod relay_head;
mod replay;
mod respond;
pub(crate) mod room;
mod spread;
mod stream;
mod tcp;
#[cfg(test)]
mod test_sockets;
mod tunnel;
mod worker;

pub(crate) use frontend::{Frontend, FrontendSocket, Observe};
pub(crate) use listen::{DEFER_ACCEPT, bind, defer_accept};
pub(crate) use spread::Spread;
pub(crate) use worker::{Worker, run_worker};
