//! HTTP/2 connections to backends, shared by many requests, one set per worker thread.
//!
//! Each request is its own pick (round robin, weights, least-connections counting streams):
//! the connection only carries the stream. A backend's connection takes streams up to the
//! `SETTINGS_MAX_CONCURRENT_STREAMS` the backend advertised (read from hyper's connection,
//! which follows the backend's SETTINGS), then the next connection is used or a new one
//! opens, up to `h2_max_connections` per backend; past that cap a stream waits on the least
//! busy connection (hyper queues it until the backend frees a slot) rather than being
//! refused. One connection to a backend opens at a time: requests that find no room while
//! it opens wait for it (its SETTINGS tell how many streams it takes) and look again, so a
//! burst on a cold pool opens the connections the backend's limit needs, not one per
//! request. Streams are counted by the worker alone, so claiming and releasing one is a
//! `Cell` update, never a lock (as the HTTP/1.1 pool in `connpool` is per worker).
//!
//! A new connection joins the pool only once the backend's SETTINGS have been read (see
//! [`super::h2_preface`]), so its stream limit is the backend's from the first claim; a
//! backend that accepts the connection but sends no SETTINGS within `connect_timeout` is
//! a failed connect, retried elsewhere whatever the method.
//!
//! A connection that received GOAWAY, or closed, takes no new stream: its streams in flight
//! finish, new ones go to another connection. A stream the backend refused without
//! processing it (REFUSED_STREAM, or beyond a GOAWAY's last stream id) is reported as
//! [`refused`], which the forwarding policy retries like a connection that never opened.

use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::{Connection, SendRequest};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::connpool::Key;
use super::h2::LocalExec;
use super::h2_preface::{PrefaceSeen, PrefaceWatch};
use super::replay::ReplayBody;
use crate::config::H2Config;
use crate::tls::BackendConn;
use crate::upstream::recorder::BackendRecorder;

/// A sender of requests on one HTTP/2 connection to a backend.
pub(crate) type H2Sender = SendRequest<ReplayBody>;

/// The connection's task, polled by the worker.
type Driver = Pin<Box<Connection<TokioIo<PrefaceWatch<BackendConn>>, ReplayBody, LocalExec>>>;

/// What the pool and the connection's task share about one connection.
struct Shared {
    /// hyper's connection: polled by its task, asked for the backend's stream limit. Dropped
    /// as soon as it ends: requests still queued for it then fail at once as not sent
    /// (hyper cancels them) instead of waiting for an answer that cannot come.
    driver: RefCell<Option<Driver>>,
    /// Streams in flight on it.
    active: Cell<usize>,
    /// The connection ended (closed, failed, or drained after GOAWAY).
    done: Cell<bool>,
    /// Whether the backend's SETTINGS arrived; told when the connection ends.
    preface: Rc<PrefaceSeen>,
    /// The backend's gauges of connections and streams.
    recorder: Arc<BackendRecorder>,
    /// Counted in `recorder` as an open connection (from its SETTINGS until it ends).
    counted: Cell<bool>,
    /// A stream was claimed since the last sweep.
    used: Cell<bool>,
    /// Sweeps (one a second) in a row that found it without a stream.
    idle_sweeps: Cell<u32>,
}

impl Shared {
    /// Streams the backend accepts at once on this connection.
    fn limit(&self) -> usize {
        // Never borrowed across an await: the task borrows only inside one `poll`.
        self.driver.try_borrow().map_or(1, |d| {
            d.as_ref()
                .map_or(1, |d| d.current_max_send_streams().max(1))
        })
    }
}

/// One HTTP/2 connection in the pool.
struct Conn {
    sender: H2Sender,
    shared: Rc<Shared>,
    /// The upstream's `keepalive_timeout` in sweeps: idle that long, it is closed.
    idle_limit: u32,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.shared.done.get() && !self.sender.is_closed()
    }

    /// Counts one more sweep; false once it has been idle for more than `idle_limit` sweeps
    /// (so for at least `keepalive_timeout`, at most a second more).
    fn still_wanted(&self) -> bool {
        let s = &self.shared;
        if s.active.get() > 0 || s.used.replace(false) {
            s.idle_sweeps.set(0);
            return true;
        }
        s.idle_sweeps.set(s.idle_sweeps.get().saturating_add(1));
        s.idle_sweeps.get() <= self.idle_limit
    }
}

/// A stream's place on its connection, counted until dropped (when the response body
/// ends or is dropped).
pub(crate) struct Stream(Rc<Shared>);

impl Stream {
    fn claim(shared: &Rc<Shared>) -> Stream {
        shared.active.set(shared.active.get() + 1);
        shared.used.set(true);
        shared
            .recorder
            .http2
            .streams
            .fetch_add(1, Ordering::Relaxed);
        Stream(Rc::clone(shared))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
        self.0
            .recorder
            .http2
            .streams
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("active", &self.0.active.get())
            .finish()
    }
}

/// Why a new HTTP/2 connection could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// hyper's handshake failed (rondo's preface could not be written).
    #[error("the HTTP/2 handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
    /// The backend sent no SETTINGS frame in time: nothing was sent on the connection.
    #[error("the backend sent no HTTP/2 SETTINGS within {0:?}")]
    Silent(Duration),
    /// The backend closed the connection before its SETTINGS: nothing was sent on it.
    #[error("the backend closed the connection before its HTTP/2 SETTINGS")]
    Closed,
}

/// One worker's HTTP/2 connections, by backend address and TLS setup (Fx-hashed like
/// [`super::connpool::ConnPool`]: the keys come from the configuration, not from clients).
#[derive(Default)]
pub(crate) struct H2Pool {
    conns: RefCell<FxHashMap<Key, Vec<Conn>>>,
    /// Backends a connection is being opened to: a burst of requests waits for it rather
    /// than opening one connection each.
    opening: RefCell<FxHashMap<Key, Rc<tokio::sync::Notify>>>,
}

/// A connection being opened, announced until dropped (then its waiters look again).
pub(crate) struct Opening<'p> {
    pool: &'p H2Pool,
    key: Key,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if let Some(notify) = self.pool.opening.borrow_mut().remove(&self.key) {
            notify.notify_waiters();
        }
    }
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool")
            .field("backends", &self.conns.borrow().len())
            .finish()
    }
}

impl H2Pool {
    /// A stream on a connection for `key` with room for it; `None` when a new connection
    /// should open (none has room and fewer than `max_connections` are open). At the cap,
    /// the least busy connection takes it.
    pub(crate) fn claim(&self, key: Key, max_connections: usize) -> Option<(H2Sender, Stream)> {
        let mut all = self.conns.borrow_mut();
        let list = all.get_mut(&key)?;
        list.retain(Conn::usable);
        let free = list
            .iter()
            .find(|c| c.shared.active.get() < c.shared.limit());
        let conn = match free {
            Some(c) => c,
            None if list.len() < max_connections => return None,
            None => list.iter().min_by_key(|c| c.shared.active.get())?,
        };
        Some((conn.sender.clone(), Stream::claim(&conn.shared)))
    }

    /// Waits (up to `limit`) for a connection for `key` that another request is opening,
    /// if one is (`true`: [`H2Pool::claim`] again).
    pub(crate) async fn wait_for_opening(&self, key: Key, limit: Duration) -> bool {
        let Some(notify) = self.opening.borrow().get(&key).cloned() else {
            return false;
        };
        let _ = tokio::time::timeout(limit, notify.notified()).await;
        true
    }

    /// Announces that a connection for `key` is being opened (see
    /// [`H2Pool::wait_for_opening`]).
    pub(crate) fn opening(&self, key: Key) -> Opening<'_> {
        self.opening
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| Rc::new(tokio::sync::Notify::new()));
        Opening { pool: self, key }
    }

    /// Starts HTTP/2 on a new connection for `key`, waits up to `wait` for the backend's
    /// SETTINGS, then adds it to the pool and claims its first stream; `recorder` counts its
    /// connections and streams. Without a stream for `keep_idle`, the pool closes it.
    pub(crate) async fn open(
        &self,
        key: Key,
        io: BackendConn,
        settings: H2Config,
        wait: Duration,
        keep_idle: Duration,
        recorder: Arc<BackendRecorder>,
    ) -> Result<(H2Sender, Stream), OpenError> {
        let mut builder = hyper::client::conn::http2::Builder::new(LocalExec);
        builder.timer(TokioTimer::new());
        if let Some(every) = settings.ping_interval {
            builder
                .keep_alive_interval(every)
                .keep_alive_timeout(every)
                .keep_alive_while_idle(true);
        }
        let preface = Rc::new(PrefaceSeen::default());
        let watched = PrefaceWatch::new(io, Rc::clone(&preface));
        let (sender, conn) = builder.handshake(TokioIo::new(watched)).await?;
        let shared = Rc::new(Shared {
            driver: RefCell::new(Some(Box::pin(conn))),
            active: Cell::new(0),
            done: Cell::new(false),
            preface: Rc::clone(&preface),
            recorder,
            counted: Cell::new(false),
            used: Cell::new(false),
            idle_sweeps: Cell::new(0),
        });
        tokio::task::spawn_local(Drive(Rc::clone(&shared)));
        let _ = tokio::time::timeout(wait, preface.wait()).await;
        if !preface.seen() {
            // Dropping the only sender ends the connection.
            return Err(if shared.done.get() {
                OpenError::Closed
            } else {
                OpenError::Silent(wait)
            });
        }
        shared
            .recorder
            .http2
            .connections
            .fetch_add(1, Ordering::Relaxed);
        shared.counted.set(true);
        let stream = Stream::claim(&shared);
        self.conns.borrow_mut().entry(key).or_default().push(Conn {
            sender: sender.clone(),
            shared,
            idle_limit: u32::try_from(keep_idle.as_secs().max(1)).unwrap_or(u32::MAX),
        });
        Ok((sender, stream))
    }

    /// Forgets connections that ended, and closes those idle for their upstream's
    /// `keepalive_timeout` (dropping the pool's sender ends the connection once no request
    /// holds one). Called once a second.
    pub(crate) fn sweep(&self) {
        let mut all = self.conns.borrow_mut();
        for list in all.values_mut() {
            list.retain(|c| c.usable() && c.still_wanted());
        }
        all.retain(|_, list| !list.is_empty());
    }
}

/// The task that runs one connection until it ends, then marks it done.
struct Drive(Rc<Shared>);

impl Future for Drive {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let ended = match self.0.driver.try_borrow_mut() {
            Ok(mut slot) => match slot.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Pending) => false,
                // Dropped here: what is still queued for it is cancelled (see `driver`).
                Some(Poll::Ready(_)) | None => {
                    *slot = None;
                    true
                }
            },
            // Not reachable on one thread; try again rather than stall.
            Err(_) => {
                cx.waker().wake_by_ref();
                false
            }
        };
        if ended {
            self.0.done.set(true);
            self.0.preface.give_up();
            if self.0.counted.replace(false) {
                let gauge = &self.0.recorder.http2.connections;
                gauge.fetch_sub(1, Ordering::Relaxed);
            }
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// True when `error` says the request was never processed by the backend, so it may go to
/// another backend whatever its method: hyper did not write it (the connection closed
/// first), the backend refused the stream (REFUSED_STREAM), or a graceful GOAWAY left it
/// out.
pub(crate) fn refused(error: &hyper::Error) -> bool {
    if error.is_canceled() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away()
                    && h2.is_remote()
                    && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        source = e.source();
    }
    false
}
