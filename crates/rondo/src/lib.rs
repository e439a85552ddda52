//! # rondo
//!
//! The load balancer program as a library, so integration tests and the demo start the real
//! thing in-process: configuration, the HTTP proxy, health checks, the admin API and the
//! load generator. `main.rs` only parses the command line and dispatches here.

pub mod access_log;
pub mod admin;
pub mod bench;
pub mod clock;
pub mod compare;
pub mod config;
pub mod demo;
pub mod header_rules;
mod local_http;
pub mod proxy;
pub mod request_id;
pub mod serve;
pub mod upstream;
