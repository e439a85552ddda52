//! A request body that can be sent again: it streams the client's body to the backend and
//! keeps a copy of what it read, up to a limit, so a retry on another backend starts with
//! the copy and goes on with the rest of the client's stream (Envoy's request buffering for
//! retries). Nothing waits for the whole body before the first attempt, so a streaming call
//! (a gRPC bidirectional stream, a long upload) flows as it arrives; only a body that grew
//! past the limit cannot be replayed.
//!
//! The copy holds `Bytes` handles of the frames already received: keeping them costs a
//! reference count, not a copy of the data.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The client's body and what was read of it, shared by every attempt's [`ReplayBody`].
#[derive(Debug)]
struct Source {
    /// The client's stream; `None` once it ended (or for a request without a body).
    body: Option<Incoming>,
    /// Data frames read so far, while their total stays within `limit`.
    kept: Vec<Bytes>,
    /// Bytes read so far.
    read: usize,
    /// The most that is kept for a replay.
    limit: usize,
    /// More than `limit` was read: what an attempt took is gone for the next.
    overflowed: bool,
    /// The trailers, once read.
    trailers: Option<HeaderMap>,
    /// The client's stream ended (cleanly).
    ended: bool,
    /// The client's stream failed.
    failed: bool,
    /// The most the client may send (`max_body_size`).
    max: Option<u64>,
    /// It sent more: the stream was cut, and the client gets a 413.
    too_large: bool,
    /// The attempt whose body reads the client's stream; an earlier attempt's body (still
    /// held by a connection that has not noticed it was abandoned) reads nothing more.
    attempt: u32,
}

/// Why an attempt's body stopped: the client's stream failed, or a newer attempt took over.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// One attempt's view of a request body: the frames kept from earlier attempts first, then
/// the rest of the client's stream.
#[derive(Debug)]
pub(crate) struct ReplayBody {
    source: Rc<RefCell<Source>>,
    /// Which attempt this body belongs to (see [`Source::attempt`]).
    attempt: u32,
    /// Index of the next kept frame this attempt sends.
    next: usize,
    trailers_sent: bool,
}

/// The request body of one request, from which each attempt takes a [`ReplayBody`].
#[derive(Debug, Clone)]
pub(crate) struct Replay(Rc<RefCell<Source>>);

impl Replay {
    /// Wraps the client's body (`None`: the request has none), keeping up to `limit` bytes
    /// and failing every attempt once more than `max` arrived.
    pub(crate) fn new(body: Option<Incoming>, limit: usize, max: Option<u64>) -> Replay {
        let ended = body.as_ref().is_none_or(Body::is_end_stream);
        Replay(Rc::new(RefCell::new(Source {
            body: if ended { None } else { body },
            kept: Vec::new(),
            read: 0,
            limit,
            overflowed: false,
            trailers: None,
            ended,
            failed: false,
            max,
            too_large: false,
            attempt: 0,
        })))
    }

    /// True while a new attempt can send the whole body: nothing read was dropped.
    pub(crate) fn can_replay(&self) -> bool {
        let source = self.0.borrow();
        !source.overflowed && !source.failed
    }

    /// True once the client sent more than `max_body_size`: the attempt that read it
    /// failed for that, not for its backend.
    pub(crate) fn too_large(&self) -> bool {
        self.0.borrow().too_large
    }

    /// The body for a new attempt.
    pub(crate) fn attempt(&self) -> ReplayBody {
        let attempt = {
            let mut source = self.0.borrow_mut();
            source.attempt = source.attempt.wrapping_add(1);
            source.attempt
        };
        ReplayBody {
            source: Rc::clone(&self.0),
            attempt,
            next: 0,
            trailers_sent: false,
        }
    }
}

/// The end of a body: the client's trailers, once (`sent` remembers), then nothing.
fn end(sent: &mut bool, source: &Source) -> Option<Result<Frame<Bytes>, BodyError>> {
    if *sent {
        return None;
    }
    *sent = true;
    source.trailers.clone().map(|t| Ok(Frame::trailers(t)))
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let shared = Rc::clone(&this.source);
        let mut guard = shared.borrow_mut();
        let source = &mut *guard;
        if source.attempt != this.attempt {
            return Poll::Ready(Some(Err("the request went to another backend".into())));
        }
        if !source.overflowed
            && let Some(data) = source.kept.get(this.next)
        {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
        }
        loop {
            let body = match (source.ended, source.body.as_mut()) {
                (false, Some(body)) => body,
                _ => return Poll::Ready(end(&mut this.trailers_sent, source)),
            };
            return match Pin::new(body).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    source.ended = true;
                    source.body = None;
                    Poll::Ready(end(&mut this.trailers_sent, source))
                }
                Poll::Ready(Some(Err(e))) => {
                    source.failed = true;
                    source.body = None;
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    // An empty DATA frame (a client's bare END_STREAM) carries nothing:
                    // forwarded, it would count against the backend's budget of empty
                    // frames (HTTP/2 servers close connections that send many).
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => {
                        source.read += data.len();
                        if source.max.is_some_and(|max| source.read as u64 > max) {
                            source.too_large = true;
                            source.failed = true;
                            source.body = None;
                            return Poll::Ready(Some(Err("request body too large".into())));
                        }
                        if source.overflowed || source.read > source.limit {
                            source.overflowed = true;
                            source.kept = Vec::new();
                        } else {
                            source.kept.push(data.clone());
                            this.next = source.kept.len();
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Err(frame) => {
                        if let Some(trailers) = frame.trailers_ref() {
                            source.trailers = Some(trailers.clone());
                            this.trailers_sent = true;
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                },
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        let source = self.source.borrow();
        source.ended
            && source.trailers.is_none()
            && (source.overflowed || self.next >= source.kept.len())
    }

    fn size_hint(&self) -> SizeHint {
        let source = self.source.borrow();
        match &source.body {
            None if source.ended && source.trailers.is_none() && !source.overflowed => {
                let rest: usize = source.kept.iter().skip(self.next).map(Bytes::len).sum();
                SizeHint::with_exact(rest as u64)
            }
            None => SizeHint::default(),
            Some(body) => {
                let kept: usize = source.kept.iter().skip(self.next).map(Bytes::len).sum();
                let mut hint = body.size_hint();
                hint.set_lower(hint.lower() + kept as u64);
                if let Some(upper) = hint.upper() {
                    hint.set_upper(upper + kept as u64);
                }
                hint
            }
        }
    }
}
