//! The lab: tools that run the server to show what it does — `rondo demo` and
//! `rondo compare`. They use the server; the server never uses them, so nothing under
//! `proxy/`, `upstream/` or `admin/` imports from here.

pub mod compare;
pub mod demo;
mod local_http;
