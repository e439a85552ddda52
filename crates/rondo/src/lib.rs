//! # rondo
//!
//! The load balancer program as a library, so integration tests and the demo start the real
//! thing in-process: configuration, the HTTP proxy, health checks and the admin API, plus
//! the demo and the comparison in `lab` (which use the server; the server never uses them).
//! The load generator is its own crate, `rondo-bench`. `main.rs` only parses the command
//! line and dispatches here.

pub mod access_log;
pub mod admin;
pub mod clean_pages;
pub mod cli;
pub mod clock;
pub mod config;
pub mod counters;
pub mod grpc;
pub mod header_rules;
pub mod lab;
pub mod proxy;
pub mod request_id;
pub mod runtime;
pub mod serve;
pub mod tls;
pub mod upstream;
