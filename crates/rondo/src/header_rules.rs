//! Header rules: headers a listener or route sets or removes on the request it forwards
//! (`request_headers`, as nginx's `proxy_set_header` or HAProxy's `http-request
//! set-header`) and on the response it returns (`response_headers`, as nginx's
//! `add_header`). A value may use `$remote_addr` (the client's IP), `$host` (the request's
//! `Host`, without port) and `$request_id`.
//!
//! Framing and hop-by-hop headers (`content-length`, `transfer-encoding`, `connection`, …)
//! are the proxy's to write and are refused by validation: a rule must not be able to
//! desynchronise a connection.

use std::fmt;

/// True for a header a rule may not touch: it frames the message (`Content-Length`) or
/// manages the connection (the hop-by-hop fields), which the proxy does itself.
pub fn is_reserved(lower: &str) -> bool {
    lower == "content-length" || crate::proxy::protocol::is_hop_by_hop(lower)
}

/// The variables a value may use.
pub const VARIABLES: &[&str] = &["$remote_addr", "$host", "$request_id"];

/// A listener's or route's rules for both directions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// `request_headers`: applied to the request forwarded to the backend.
    pub request: HeaderRules,
    /// `response_headers`: applied to the response returned to the client.
    pub response: HeaderRules,
}

/// What one direction's rules do: remove these headers, then set those (replacing any
/// header of that name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Headers set, lower-case names in the order written, values as templates.
    pub set: Vec<(String, Value)>,
    /// Headers removed, lower-case names.
    pub remove: Vec<String>,
}

impl HeaderRules {
    /// True when the rules change nothing (the forwarding code skips them).
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// True when the rules set or remove `name` (lower-case): the forwarding code drops the
    /// message's own header of that name.
    pub fn touches(&self, name: &str) -> bool {
        self.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
            || self.set.iter().any(|(s, _)| s.eq_ignore_ascii_case(name))
    }
}

/// A header value: literal text and variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Value(Vec<Piece>);

/// A part of a [`Value`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text as written.
    Literal(String),
    /// `$remote_addr`.
    RemoteAddr,
    /// `$host`.
    Host,
    /// `$request_id`.
    RequestId,
}

/// What the variables stand for in one request.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The client's IP address, as text.
    pub remote_addr: &'a str,
    /// The request's host, without port (empty when the request named none).
    pub host: &'a str,
    /// The request id.
    pub request_id: &'a str,
}

impl Value {
    /// Parses a value; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Value, String> {
        if let Some(bad) = text.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(format!(
                "a header value may not contain control characters (found {bad:?})"
            ));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            if at > 0 {
                pieces.push(Piece::Literal(rest[..at].to_owned()));
            }
            let after = &rest[at..];
            let end = after[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(after.len(), |e| e + 1);
            if end == 1 {
                // A `$` not followed by a name is text: "5$".
                pieces.push(Piece::Literal("$".to_owned()));
                rest = &after[1..];
                continue;
            }
            let piece = match &after[..end] {
                "$remote_addr" => Piece::RemoteAddr,
                "$host" => Piece::Host,
                "$request_id" => Piece::RequestId,
                other => {
                    return Err(format!(
                        "unknown variable `{other}`; a header value may use {}",
                        VARIABLES.join(", ")
                    ));
                }
            };
            pieces.push(piece);
            rest = &after[end..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok(Value(pieces))
    }

    /// Appends the value for one request to `out`.
    pub fn write(&self, vars: &Vars<'_>, out: &mut Vec<u8>) {
        for piece in &self.0 {
            let text = match piece {
                Piece::Literal(t) => t.as_str(),
                Piece::RemoteAddr => vars.remote_addr,
                Piece::Host => vars.host,
                Piece::RequestId => vars.request_id,
            };
            // The variables come from a parsed request head or from rondo; strip anything
            // that could end the header line all the same.
            out.extend(text.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)));
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for piece in &self.0 {
            match piece {
                Piece::Literal(t) => f.write_str(t)?,
                Piece::RemoteAddr => f.write_str("$remote_addr")?,
                Piece::Host => f.write_str("$host")?,
                Piece::RequestId => f.write_str("$request_id")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(v: &str) -> String {
        let mut out = Vec::new();
        Value::parse(v).unwrap().write(
            &Vars {
                remote_addr: "10.0.0.7",
                host: "example.com",
                request_id: "r1",
            },
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn variables_are_replaced_and_text_kept() {
        assert_eq!(render("$remote_addr"), "10.0.0.7");
        assert_eq!(
            render("id=$request_id; host=$host."),
            "id=r1; host=example.com."
        );
        assert_eq!(render("5$"), "5$");
        assert_eq!(Value::parse("a $host").unwrap().to_string(), "a $host");
    }

    #[test]
    fn unknown_variables_and_line_breaks_are_refused() {
        let e = Value::parse("$remote_port").unwrap_err();
        assert!(
            e.starts_with("unknown variable `$remote_port`; a header value may use $remote_addr"),
            "{e}"
        );
        assert!(Value::parse("a\r\nx-evil: 1").is_err());
    }
}
