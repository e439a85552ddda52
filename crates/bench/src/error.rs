//! What can go wrong: [`BenchError`] stops a run before it starts (a bad URL, a header that
//! is not HTTP, a host that does not resolve); [`ErrorKind`] classifies a failed request
//! during a run, which is counted in the report and never stops the run.

use std::io;

use serde::Serialize;

/// Why a load generation could not start (or, rarely, could not finish).
///
/// Failures of individual requests are not `BenchError`s: they are counted by
/// [`ErrorKind`] in the [`Report`](super::Report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The URL does not parse, or is not `http://host[:port][/path]`.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name of the URL did not resolve to any address.
    #[error("cannot resolve {host:?}")]
    Resolve {
        /// `host:port` as looked up.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// A header given with `-H` is not `Name: value`, or the name or value is not valid HTTP.
    #[error("invalid header {header:?}: {reason}")]
    InvalidHeader {
        /// The header as given.
        header: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The method is not an HTTP token.
    #[error("invalid method {0:?}: a method is a token such as GET, POST or PURGE")]
    InvalidMethod(String),
    /// Some other option is out of range (zero connections, a rate that is not positive, …).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The body file could not be read.
    #[error("cannot read body file {path:?}")]
    BodyFile {
        /// The path as given.
        path: String,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// The tokio runtime could not be built.
    #[error("cannot start the runtime")]
    Runtime(#[source] io::Error),
    /// A connection task ended abnormally (a bug: it is reported rather than lost).
    #[error("a connection task failed: {0}")]
    Task(String),
}

/// How a request failed, for the report's error counts.
///
/// A response with any status is not an error (a 503 is counted under its status code);
/// these are the requests that got no complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The TCP connection (or the HTTP/2 handshake) could not be established: refused,
    /// unreachable, or not established within the timeout.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// The server reset or closed the connection before the response was complete.
    Closed,
    /// Anything else: an unparsable response, an oversized head, an unsupported upgrade,
    /// an I/O error of another kind.
    Other,
}

impl ErrorKind {
    /// All kinds, in report order.
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Closed,
        ErrorKind::Other,
    ];

    /// The kind's name in the text and JSON reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
            ErrorKind::Other => "other",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Classifies an I/O error that happened on an established connection.
    pub(crate) fn of_io(err: &io::Error) -> ErrorKind {
        match err.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected => ErrorKind::Closed,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Other,
        }
    }
}

/// A failed request: its kind and a message for the report's first example of that kind.
#[derive(Debug)]
pub(crate) struct RequestError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: ErrorMessage,
}

/// The message of a [`RequestError`], kept unformatted so that counting an error does not
/// allocate; it is rendered only for the first error of each kind on a connection.
#[derive(Debug)]
pub(crate) enum ErrorMessage {
    Static(&'static str),
    Io(io::Error),
    Parse(httparse::Error),
    Hyper(hyper::Error),
}

impl std::fmt::Display for ErrorMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorMessage::Static(s) => f.write_str(s),
            ErrorMessage::Io(e) => write!(f, "{e}"),
            ErrorMessage::Parse(e) => write!(f, "malformed response: {e}"),
            ErrorMessage::Hyper(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
        }
    }
}

impl RequestError {
    pub(crate) fn new(kind: ErrorKind, message: &'static str) -> Self {
        RequestError {
            kind,
            message: ErrorMessage::Static(message),
        }
    }

    pub(crate) fn io(err: io::Error) -> Self {
        RequestError {
            kind: ErrorKind::of_io(&err),
            message: ErrorMessage::Io(err),
        }
    }

    pub(crate) fn connect(err: io::Error) -> Self {
        RequestError {
            kind: ErrorKind::Connect,
            message: ErrorMessage::Io(err),
        }
    }

    pub(crate) fn parse(err: httparse::Error) -> Self {
        RequestError {
            kind: ErrorKind::Other,
            message: ErrorMessage::Parse(err),
        }
    }
}
