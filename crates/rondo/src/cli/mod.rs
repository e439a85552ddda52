//! Commands that talk to a running balancer from outside, as any operator's tool would:
//! `rondo status` (its statistics as a table) and `rondo reload` (signal it, then read how
//! the reload ended). They read the server's JSON types, through its admin API; nothing in
//! the server uses them.

mod admin_client;
pub mod reload;
pub mod status;
