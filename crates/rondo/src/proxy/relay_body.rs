//! The body of a backend's response on its way to the client through hyper (from an HTTP/2
//! stream, or read by [`super::h1_upstream`] from an HTTP/1.1 connection): it holds the
//! HTTP/2 stream's place on its connection until it ends, and judges a gRPC call whose
//! status comes in the trailers (the forwarding policy defers such a call's outcome, see
//! [`super::forward::Delivered::verdict_in_body`]).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use balance::{Deferred, Outcome};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::h1_upstream::ResponseBody;
use super::h2_upstream::Stream;
use super::replay::BodyError;
use crate::upstream::Upstream;

/// A backend's response body as it arrives, over HTTP/2 or HTTP/1.1.
#[derive(Debug)]
pub(crate) enum FromBackend {
    H2(Incoming),
    H1(ResponseBody),
}

impl Body for FromBackend {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BodyError>>> {
        match self.get_mut() {
            FromBackend::H2(body) => std::pin::Pin::new(body).poll_frame(cx).map_err(Into::into),
            FromBackend::H1(body) => std::pin::Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FromBackend::H2(body) => body.is_end_stream(),
            FromBackend::H1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FromBackend::H2(body) => body.size_hint(),
            FromBackend::H1(body) => body.size_hint(),
        }
    }
}

/// A backend's response body, holding its HTTP/2 stream's place on the connection until
/// the body ends or is dropped, and judging a gRPC call by the status in its trailers.
#[derive(Debug)]
pub(crate) struct Tracked {
    body: FromBackend,
    _stream: Option<Stream>,
    verdict: Option<Rc<LateVerdict>>,
}

/// A gRPC call whose status comes in its response's trailers: the forwarding policy hands
/// the request over when the response goes out ([`super::forward::Exchange::judge_later`]), the body
/// judges it when it ends. Dropped unjudged (the client went away), it counts neither way.
pub(crate) struct LateVerdict {
    upstream: Arc<Upstream>,
    deferred: Cell<Option<Deferred>>,
}

impl std::fmt::Debug for LateVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LateVerdict")
            .field("upstream", &self.upstream.name())
            .finish_non_exhaustive()
    }
}

impl LateVerdict {
    /// A verdict for a call to `upstream`, waiting for its request.
    pub(crate) fn new(upstream: Arc<Upstream>) -> LateVerdict {
        LateVerdict {
            upstream,
            deferred: Cell::new(None),
        }
    }

    /// Takes the request from the forwarding policy.
    pub(crate) fn hand_over(&self, deferred: Deferred) {
        self.deferred.set(Some(deferred));
    }

    fn judge(&self, outcome: Outcome) {
        if let Some(deferred) = self.deferred.take() {
            let now = self.upstream.clock().now();
            self.upstream.pool().judge(deferred, outcome, now);
        }
    }
}

impl Tracked {
    /// The backend's `body`, holding `stream` (HTTP/2) and judging `verdict` (a gRPC call
    /// without its status in the head) when it ends.
    pub(crate) fn new(
        body: FromBackend,
        stream: Option<Stream>,
        verdict: Option<Rc<LateVerdict>>,
    ) -> Tracked {
        Tracked {
            body,
            _stream: stream,
            verdict,
        }
    }
}

impl Body for Tracked {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<bytes::Bytes>, BodyError>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let Some(verdict) = &self.verdict {
            let outcome = match &polled {
                Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|t| {
                    let code =
                        crate::grpc::parse_status(t.get(crate::grpc::STATUS).map(|v| v.as_bytes()));
                    crate::grpc::outcome_of(code)
                }),
                // The body ended without trailers: no status, a failed call (INTERNAL).
                Poll::Ready(None) => Some(crate::grpc::outcome_of(None)),
                Poll::Ready(Some(Err(_))) => Some(Outcome::TransportError),
                Poll::Pending => None,
            };
            if let Some(outcome) = outcome {
                verdict.judge(outcome);
                self.verdict = None;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
