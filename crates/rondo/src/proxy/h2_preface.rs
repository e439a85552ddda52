//! Knowing when a backend's HTTP/2 SETTINGS have arrived on a new connection.
//!
//! hyper's HTTP/2 handshake returns as soon as rondo's own preface is written; until the
//! backend's first SETTINGS frame is read, the connection believes the backend takes 100
//! streams at once (hyper's default), whatever it will advertise. A pool that handed out
//! streams on such a connection would queue a burst inside h2 on a backend that allows ten,
//! and would send requests to a backend that accepted the TCP connection but never speaks
//! (a server in the middle of shutting down). So a new connection joins the pool only after
//! its first frame, which RFC 9113 §3.4 requires to be SETTINGS, has been read.
//!
//! [`PrefaceWatch`] wraps the socket and counts the bytes of that first frame as h2 reads
//! them; when the frame is complete it wakes whoever waits on [`PrefaceSeen`]. The waiter
//! runs on the same worker thread after h2's read loop has applied the frame, so by then
//! the connection reports the backend's real stream limit. Past the first frame the wrapper
//! only forwards.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// An HTTP/2 frame header's length (RFC 9113 §4.1).
const FRAME_HEADER: usize = 9;

/// Shared between the watcher inside the connection and the code opening it.
#[derive(Debug, Default)]
pub(crate) struct PrefaceSeen {
    seen: Cell<bool>,
    /// Also woken when the connection ends first (see [`PrefaceSeen::give_up`]).
    notify: Notify,
}

impl PrefaceSeen {
    /// True once the backend's first frame has been read whole.
    pub(crate) fn seen(&self) -> bool {
        self.seen.get()
    }

    /// Waits until the first frame was read or [`PrefaceSeen::give_up`] was called.
    pub(crate) async fn wait(&self) {
        if !self.seen.get() {
            self.notify.notified().await;
        }
    }

    /// Wakes the waiter without the frame: the connection ended.
    pub(crate) fn give_up(&self) {
        self.notify.notify_one();
    }

    fn mark(&self) {
        self.seen.set(true);
        self.notify.notify_one();
    }
}

/// Where the watcher is in the backend's first frame.
#[derive(Debug, Clone, Copy)]
enum Progress {
    /// Reading the frame header: `have` of its nine bytes so far.
    Header {
        bytes: [u8; FRAME_HEADER],
        have: usize,
    },
    /// Reading the payload: `left` bytes still to come.
    Payload { left: usize },
    /// The first frame was read.
    Done,
}

/// A socket whose first HTTP/2 frame from the backend is watched for (see the module doc).
#[derive(Debug)]
pub(crate) struct PrefaceWatch<IO> {
    io: IO,
    progress: Progress,
    seen: Rc<PrefaceSeen>,
}

impl<IO> PrefaceWatch<IO> {
    /// Wraps `io`; `seen` learns when the first frame has been read.
    pub(crate) fn new(io: IO, seen: Rc<PrefaceSeen>) -> PrefaceWatch<IO> {
        PrefaceWatch {
            io,
            progress: Progress::Header {
                bytes: [0; FRAME_HEADER],
                have: 0,
            },
            seen,
        }
    }

    /// Counts bytes just read.
    fn feed(&mut self, mut read: &[u8]) {
        while !read.is_empty() {
            match &mut self.progress {
                Progress::Header { bytes, have } => {
                    let take = (FRAME_HEADER - *have).min(read.len());
                    bytes[*have..*have + take].copy_from_slice(&read[..take]);
                    *have += take;
                    read = &read[take..];
                    if *have == FRAME_HEADER {
                        let left = usize::from(bytes[0]) << 16
                            | usize::from(bytes[1]) << 8
                            | usize::from(bytes[2]);
                        self.progress = Progress::Payload { left };
                    }
                }
                Progress::Payload { left } => {
                    let take = (*left).min(read.len());
                    *left -= take;
                    read = &read[take..];
                }
                Progress::Done => return,
            }
            if let Progress::Payload { left: 0 } = self.progress {
                self.progress = Progress::Done;
                self.seen.mark();
                return;
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for PrefaceWatch<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Progress::Done = this.progress {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.feed(buf.filled().get(before..).unwrap_or_default());
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for PrefaceWatch<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watcher() -> PrefaceWatch<tokio::io::Empty> {
        PrefaceWatch::new(tokio::io::empty(), Rc::new(PrefaceSeen::default()))
    }

    /// A SETTINGS frame with one setting (6 bytes of payload), then a PING.
    const SETTINGS_THEN_PING: [u8; 32] = [
        0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 10, // SETTINGS, MAX_CONCURRENT_STREAMS 10
        0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, // PING
    ];

    #[test]
    fn the_first_frame_is_seen_only_when_whole_however_it_is_split() {
        for split in 0..SETTINGS_THEN_PING.len() {
            let mut w = watcher();
            let (a, b) = SETTINGS_THEN_PING.split_at(split);
            for byte in a {
                w.feed(std::slice::from_ref(byte));
            }
            assert_eq!(w.seen.seen(), split >= 15, "split at {split}");
            w.feed(b);
            assert!(w.seen.seen(), "split at {split}");
        }
    }

    #[test]
    fn an_empty_settings_frame_is_seen_after_its_header() {
        let mut w = watcher();
        w.feed(&[0, 0, 0, 4, 0, 0, 0, 0]);
        assert!(!w.seen.seen());
        w.feed(&[0]);
        assert!(w.seen.seen());
    }
}
