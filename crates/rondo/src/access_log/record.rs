//! What one request leaves in the access log, as the forwarding code knows it at the end:
//! borrowed from the request's own buffers, so building one costs nothing when the log is
//! off and formatting happens only when a line is really written.

use std::time::{Duration, SystemTime};

/// The backends one request tried, in order: a fixed array so the request path never
/// allocates to remember them (past [`Tried::CAPACITY`] the oldest are kept, later ones
/// dropped, as the proxy's own bookkeeping bounds attempts the same way).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tried<'a> {
    ids: [&'a str; Tried::CAPACITY],
    len: usize,
}

impl<'a> Tried<'a> {
    /// Attempts one record remembers; more than eight tries per request is a misconfiguration
    /// the log need not spell out in full.
    pub const CAPACITY: usize = 8;

    /// Remembers one more backend (its id, which is its address unless the config names it).
    pub fn push(&mut self, id: &'a str) {
        if let Some(slot) = self.ids.get_mut(self.len) {
            *slot = id;
            self.len += 1;
        }
    }

    /// The backends, first tried first.
    pub fn as_slice(&self) -> &[&'a str] {
        &self.ids[..self.len]
    }
}

/// Timings of the last attempt, as nginx's `$upstream_connect_time`, `$upstream_header_time`
/// and `$upstream_response_time`: from the start of the attempt to the connection being
/// ready, to the response head, to the end of the response. `None` when the attempt never
/// got that far (or no attempt was made).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamTimes {
    /// Until the backend connection was ready (zero for a reused pooled connection).
    pub connect: Option<Duration>,
    /// Until the response head arrived.
    pub header: Option<Duration>,
    /// Until the whole response was read.
    pub response: Option<Duration>,
}

/// One request, as the access log sees it. Every field is borrowed or `Copy`: the
/// forwarding code fills it from what it already holds.
#[derive(Debug, Clone, Copy)]
pub struct AccessRecord<'a> {
    /// The client's IP address as text (IPv4-mapped IPv6 shown as IPv4).
    pub client: &'a str,
    /// When the request started (its head was read).
    pub time: SystemTime,
    /// The request method, e.g. `GET`.
    pub method: &'a str,
    /// The request target as the client sent it, e.g. `/api?x=1`.
    pub target: &'a str,
    /// `HTTP/1.1`, `HTTP/1.0` or `HTTP/2.0`.
    pub protocol: &'a str,
    /// The status sent to the client.
    pub status: u16,
    /// Bytes written to the client (response head and body).
    pub bytes_sent: u64,
    /// Bytes read from the client (request head and body).
    pub bytes_received: u64,
    /// The `Referer` header, if any.
    pub referer: Option<&'a str>,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<&'a str>,
    /// The listener's name.
    pub listener: &'a str,
    /// The upstream's name (`None` when the request never reached routing, e.g. a 400).
    pub upstream: Option<&'a str>,
    /// The backends tried, in order.
    pub tried: Tried<'a>,
    /// Attempts made (connections tried; a reused connection found closed is not one).
    pub attempts: u32,
    /// Timings of the last attempt.
    pub upstream_times: UpstreamTimes,
    /// From the start of the request to the last byte sent to the client.
    pub total: Duration,
    /// The request id (`X-Request-Id`) forwarded and given to the client.
    pub request_id: &'a str,
    /// The TLS version of the client connection (`None` on plain TCP).
    pub tls_version: Option<&'a str>,
}
