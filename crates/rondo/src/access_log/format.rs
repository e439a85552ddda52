//! How a record becomes a line: nginx's `combined` (what log analysers read), one JSON
//! object per line (what log pipelines read), or a template of `$variables` named as nginx
//! names them where nginx has the field (`$remote_addr`, `$status`, `$upstream_addr`, …).
//!
//! Times are UTC. Durations are exact to the microsecond: seconds with six decimals in text
//! (`0.001234`), integer microseconds in JSON (`"request_time_us": 1234`); never a float's
//! rounding noise.

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::record::AccessRecord;

/// A line format, chosen by `access_log.format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// nginx's `combined`: `$remote_addr - - [$time_local] "$request" $status $bytes_sent
    /// "$http_referer" "$http_user_agent"`.
    Combined,
    /// One JSON object per line with every field.
    Json,
    /// A template of literal text and `$variables`.
    Template(Vec<Piece>),
}

/// A part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text copied as written.
    Literal(String),
    /// A field of the record.
    Var(Var),
}

/// A problem with a template: an unknown variable, or a `$` with no name after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(String);

/// Defines the variables once: the enum, their names, and the list shown in errors.
macro_rules! vars {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// A template variable.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Var { $($(#[$doc])* $variant,)* }

        impl Var {
            /// Every variable, in the order the documentation lists them.
            pub const ALL: &[Var] = &[$(Var::$variant,)*];

            /// The name written after `$`.
            pub fn name(self) -> &'static str {
                match self { $(Var::$variant => $name,)* }
            }
        }
    };
}

vars! {
    /// The client's IP address.
    RemoteAddr = "remote_addr",
    /// Request start, `10/Oct/2026:13:55:36 +0000`.
    TimeLocal = "time_local",
    /// Request start, RFC 3339 with milliseconds.
    TimeIso8601 = "time_iso8601",
    /// `GET /path HTTP/1.1`.
    Request = "request",
    /// The method.
    RequestMethod = "request_method",
    /// The request target.
    RequestUri = "request_uri",
    /// `HTTP/1.1` or `HTTP/2.0`.
    ServerProtocol = "server_protocol",
    /// The status sent to the client.
    Status = "status",
    /// Bytes sent to the client, head and body.
    BytesSent = "bytes_sent",
    /// Bytes received from the client, head and body.
    RequestLength = "request_length",
    /// The `Referer` header, `-` when absent.
    HttpReferer = "http_referer",
    /// The `User-Agent` header, `-` when absent.
    HttpUserAgent = "http_user_agent",
    /// The listener's name.
    Listener = "listener",
    /// The upstream's name.
    Upstream = "upstream",
    /// The backends tried, comma-separated, `-` when none.
    UpstreamAddr = "upstream_addr",
    /// Attempts made.
    UpstreamAttempts = "upstream_attempts",
    /// Seconds until the last attempt's connection was ready.
    UpstreamConnectTime = "upstream_connect_time",
    /// Seconds until the last attempt's response head.
    UpstreamHeaderTime = "upstream_header_time",
    /// Seconds until the end of the last attempt's response.
    UpstreamResponseTime = "upstream_response_time",
    /// Seconds from the request's start to its last byte.
    RequestTime = "request_time",
    /// The same in integer microseconds.
    RequestTimeUs = "request_time_us",
    /// The request id.
    RequestId = "request_id",
    /// The client connection's TLS version, `-` on plain TCP.
    SslProtocol = "ssl_protocol",
}

impl FromStr for Format {
    type Err = FormatError;

    /// `combined`, `json`, or a template containing at least one `$variable`.
    fn from_str(s: &str) -> Result<Format, FormatError> {
        match s {
            "combined" => Ok(Format::Combined),
            "json" => Ok(Format::Json),
            _ if !s.contains('$') => Err(FormatError(format!(
                "unknown access log format \"{s}\": expected \"combined\", \"json\" or a \
                 template such as \"$remote_addr $request $status $request_time\""
            ))),
            _ => parse_template(s).map(Format::Template),
        }
    }
}

fn parse_template(s: &str) -> Result<Vec<Piece>, FormatError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (name, after) = match rest.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => {
                    return Err(FormatError(format!(
                        "`${{` without a closing `}}` in \"{s}\""
                    )));
                }
            },
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        let Some(var) = Var::ALL.iter().copied().find(|v| v.name() == name) else {
            let known: Vec<_> = Var::ALL.iter().map(|v| format!("${}", v.name())).collect();
            let what = if name.is_empty() {
                "a `$` must be followed by a variable name".to_owned()
            } else {
                format!("unknown variable `${name}`")
            };
            return Err(FormatError(format!(
                "{what} in access log format; known: {}",
                known.join(" ")
            )));
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Var(var));
        rest = after;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

impl Format {
    /// Appends the line for `r` to `out`, newline included.
    pub fn write(&self, r: &AccessRecord<'_>, out: &mut String) {
        match self {
            Format::Combined => {
                // Writing to a String cannot fail.
                let _ = write!(
                    out,
                    "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"",
                    r.client,
                    TimeLocal(r.time),
                    Quoted(r.method),
                    Quoted(r.target),
                    Quoted(r.protocol),
                    r.status,
                    r.bytes_sent,
                    Quoted(r.referer.unwrap_or("-")),
                    Quoted(r.user_agent.unwrap_or("-")),
                );
            }
            Format::Json => {
                // Serialising strings and integers cannot fail.
                if let Ok(line) = serde_json::to_string(&JsonLine::from(r)) {
                    out.push_str(&line);
                }
            }
            Format::Template(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Literal(text) => out.push_str(text),
                        Piece::Var(var) => write_var(*var, r, out),
                    }
                }
            }
        }
        out.push('\n');
    }
}

fn write_var(var: Var, r: &AccessRecord<'_>, out: &mut String) {
    let t = &r.upstream_times;
    // Writing to a String cannot fail.
    let _ = match var {
        Var::RemoteAddr => write!(out, "{}", r.client),
        Var::TimeLocal => write!(out, "{}", TimeLocal(r.time)),
        Var::TimeIso8601 => write!(out, "{}", humantime::format_rfc3339_millis(r.time)),
        Var::Request => write!(
            out,
            "{} {} {}",
            Quoted(r.method),
            Quoted(r.target),
            Quoted(r.protocol)
        ),
        Var::RequestMethod => write!(out, "{}", Quoted(r.method)),
        Var::RequestUri => write!(out, "{}", Quoted(r.target)),
        Var::ServerProtocol => write!(out, "{}", Quoted(r.protocol)),
        Var::Status => write!(out, "{}", r.status),
        Var::BytesSent => write!(out, "{}", r.bytes_sent),
        Var::RequestLength => write!(out, "{}", r.bytes_received),
        Var::HttpReferer => write!(out, "{}", Quoted(r.referer.unwrap_or("-"))),
        Var::HttpUserAgent => write!(out, "{}", Quoted(r.user_agent.unwrap_or("-"))),
        Var::Listener => write!(out, "{}", Quoted(r.listener)),
        Var::Upstream => write!(out, "{}", Quoted(r.upstream.unwrap_or("-"))),
        Var::UpstreamAddr => {
            let tried = r.tried.as_slice();
            if tried.is_empty() {
                out.push('-');
            }
            for (i, id) in tried.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{}", Quoted(id));
            }
            Ok(())
        }
        Var::UpstreamAttempts => write!(out, "{}", r.attempts),
        Var::UpstreamConnectTime => write!(out, "{}", Seconds(t.connect)),
        Var::UpstreamHeaderTime => write!(out, "{}", Seconds(t.header)),
        Var::UpstreamResponseTime => write!(out, "{}", Seconds(t.response)),
        Var::RequestTime => write!(out, "{}", Seconds(Some(r.total))),
        Var::RequestTimeUs => write!(out, "{}", r.total.as_micros()),
        Var::RequestId => write!(out, "{}", Quoted(r.request_id)),
        Var::SslProtocol => write!(out, "{}", Quoted(r.tls_version.unwrap_or("-"))),
    };
}

/// A duration as seconds with six decimals, `-` when absent (nginx prints `-` too).
struct Seconds(Option<Duration>);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{}.{:06}", d.as_secs(), d.subsec_micros()),
            None => f.write_str("-"),
        }
    }
}

/// Request start as nginx's `$time_local` in UTC: `29/Nov/2026:18:17:14 +0000`.
struct TimeLocal(SystemTime);

impl fmt::Display for TimeLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        // "2026-11-29T18:17:14Z", fixed width, from the calendar code humantime already has.
        let iso = humantime::format_rfc3339_seconds(self.0).to_string();
        let month = iso
            .get(5..7)
            .and_then(|m| m.parse::<usize>().ok())
            .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
            .copied()
            .unwrap_or("Jan");
        let part = |r: std::ops::Range<usize>| iso.get(r).unwrap_or("00");
        write!(
            f,
            "{}/{month}/{}:{} +0000",
            part(8..10),
            part(0..4),
            part(11..19)
        )
    }
}

/// Text from the client inside a quoted field: `"` and `\` escaped, control bytes as
/// `\xHH`, as nginx escapes them, so a request cannot forge a second line or field.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\x22")?,
                '\\' => f.write_str("\\x5C")?,
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        write!(f, "\\x{b:02X}")?;
                    }
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The JSON line's fields: the template variables' names, durations in microseconds.
#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    remote_addr: &'a str,
    request_method: &'a str,
    request_uri: &'a str,
    server_protocol: &'a str,
    status: u16,
    bytes_sent: u64,
    request_length: u64,
    http_referer: Option<&'a str>,
    http_user_agent: Option<&'a str>,
    listener: &'a str,
    upstream: Option<&'a str>,
    upstream_addr: &'a [&'a str],
    upstream_attempts: u32,
    upstream_connect_time_us: Option<u128>,
    upstream_header_time_us: Option<u128>,
    upstream_response_time_us: Option<u128>,
    request_time_us: u128,
    request_id: &'a str,
    ssl_protocol: Option<&'a str>,
}

impl<'a> From<&'a AccessRecord<'a>> for JsonLine<'a> {
    fn from(r: &'a AccessRecord<'a>) -> JsonLine<'a> {
        let us = |d: Option<Duration>| d.map(|d| d.as_micros());
        JsonLine {
            time: humantime::format_rfc3339_millis(r.time).to_string(),
            remote_addr: r.client,
            request_method: r.method,
            request_uri: r.target,
            server_protocol: r.protocol,
            status: r.status,
            bytes_sent: r.bytes_sent,
            request_length: r.bytes_received,
            http_referer: r.referer,
            http_user_agent: r.user_agent,
            listener: r.listener,
            upstream: r.upstream,
            upstream_addr: r.tried.as_slice(),
            upstream_attempts: r.attempts,
            upstream_connect_time_us: us(r.upstream_times.connect),
            upstream_header_time_us: us(r.upstream_times.header),
            upstream_response_time_us: us(r.upstream_times.response),
            request_time_us: r.total.as_micros(),
            request_id: r.request_id,
            ssl_protocol: r.tls_version,
        }
    }
}
