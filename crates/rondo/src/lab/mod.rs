//! The lab: what runs the server to show or test what it does — `rondo demo`,
//! `rondo compare`, and the pieces they share with the integration tests: the one mock
//! backend ([`backend`]) and the one configuration builder ([`config`]). They use the
//! server; the server never uses them, so nothing under `proxy/`, `upstream/` or `admin/`
//! imports from here.

pub mod backend;
pub mod compare;
pub mod config;
pub mod demo;
