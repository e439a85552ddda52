//! Large bodies between two plain TCP sockets moved by the kernel: `splice(2)` from the
//! source socket into a pipe and from the pipe into the destination socket, so the body's
//! bytes are never copied into rondo's memory and out again (HAProxy's `option splice-*`).
//! The pages a socket received are handed on by reference; what is saved is two copies of
//! every byte and the user-space buffer they would pass through.
//!
//! Used by [`super::body::copy`] for the rest of a body of known length once at least
//! [`SPLICE_MIN`] bytes of it are still to come and neither side is TLS. Exactly the body's
//! bytes are taken from the source (never what follows it), so a keep-alive connection stays
//! usable. A body that fails half way leaves the pipe with it (it is closed, never reused).

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::body::CopyError;

/// Bodies with at least this much still to come are spliced: below it, the pipe's own
/// system calls (open, close, one more per direction) cost more than the copies they save.
pub(crate) const SPLICE_MIN: u64 = 64 * 1024;

/// Most bytes moved per splice: a pipe's default capacity (16 pages).
const PIPE_CAPACITY: usize = 64 * 1024;

/// Moves exactly `len` bytes from `src` to `dst` through a new pipe, each read from `src`
/// bounded by `read` and each write to `dst` by `write`. `src` closing before `len` bytes is
/// an error of the source.
pub(crate) async fn body(
    src: &TcpStream,
    dst: &TcpStream,
    len: u64,
    read: Duration,
    write: Duration,
) -> Result<u64, CopyError> {
    let (pipe_out, pipe_in) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
        .map_err(|e| CopyError::Source(e.into()))?;
    let mut left = len;
    while left > 0 {
        let want = left.min(PIPE_CAPACITY as u64) as usize;
        let filled = timed(read, src, Interest::READABLE, || {
            splice(
                src,
                None,
                &pipe_in,
                None,
                want,
                SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
            )
        })
        .await
        .map_err(CopyError::Source)?;
        if filled == 0 {
            return Err(CopyError::Source(io::ErrorKind::UnexpectedEof.into()));
        }
        drain(&pipe_out, dst, filled, left > filled as u64, write).await?;
        left -= filled as u64;
    }
    settle(src);
    Ok(len)
}

/// Brings tokio's idea of `src`'s readiness up to date: a splice that took the body's last
/// bytes leaves it "readable" (tokio forgets readiness only on `WouldBlock`), and a pooled
/// backend connection that looks readable is taken for closed (`connpool`). A one-byte peek
/// either finds the next bytes (the readiness was right) or clears it.
fn settle(src: &TcpStream) {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let _ = src.poll_peek(&mut cx, &mut buf);
}

/// Writes the `n` bytes in the pipe to `dst`; `more` tells the kernel more of the body follows.
async fn drain(
    pipe_out: &OwnedFd,
    dst: &TcpStream,
    mut n: usize,
    more: bool,
    write: Duration,
) -> Result<(), CopyError> {
    let flags = if more {
        SpliceFlags::NONBLOCK | SpliceFlags::MOVE | SpliceFlags::MORE
    } else {
        SpliceFlags::NONBLOCK | SpliceFlags::MOVE
    };
    while n > 0 {
        let sent = timed(write, dst, Interest::WRITABLE, || {
            splice(pipe_out, None, dst, None, n, flags)
        })
        .await
        .map_err(CopyError::Destination)?;
        if sent == 0 {
            return Err(CopyError::Destination(io::ErrorKind::WriteZero.into()));
        }
        n -= sent;
    }
    Ok(())
}

/// Runs `op` on `socket` when it is ready for `interest`, waiting at most `limit` in all.
async fn timed(
    limit: Duration,
    socket: &TcpStream,
    interest: Interest,
    mut op: impl FnMut() -> rustix::io::Result<usize>,
) -> io::Result<usize> {
    let ready = socket.async_io(interest, || op().map_err(io::Error::from));
    match timeout(limit, ready).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const LIMIT: Duration = Duration::from_secs(10);

    /// A connected pair of loopback sockets: (the end written to, the end read from).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn exactly_the_body_moves_and_what_follows_it_stays_unread() {
        let (mut source, src) = pair().await;
        let (dst, mut sink) = pair().await;
        let body = pattern(300_000);
        let sent = body.clone();
        let writer = tokio::spawn(async move {
            source.write_all(&sent).await.unwrap();
            source.write_all(b"NEXT").await.unwrap();
            source
        });
        let reader = tokio::spawn(async move {
            let mut got = vec![0; 300_000];
            sink.read_exact(&mut got).await.unwrap();
            got
        });
        let moved = body_of(&src, &dst, 300_000).await.unwrap();
        assert_eq!(moved, 300_000);
        assert!(reader.await.unwrap() == body, "the bytes arrived in order");
        let _source = writer.await.unwrap();
        let mut next = [0; 4];
        let mut src = src;
        src.read_exact(&mut next).await.unwrap();
        assert_eq!(
            &next, b"NEXT",
            "bytes after the body are left for the next read"
        );
    }

    #[tokio::test]
    async fn a_source_closing_early_is_the_sources_error_after_what_it_sent() {
        let (mut source, src) = pair().await;
        let (dst, mut sink) = pair().await;
        source.write_all(&pattern(100_000)).await.unwrap();
        drop(source);
        let err = body_of(&src, &dst, 200_000).await.unwrap_err();
        assert!(
            matches!(&err, CopyError::Source(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{err:?}"
        );
        drop(dst);
        let mut got = Vec::new();
        sink.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, pattern(100_000));
    }

    #[tokio::test]
    async fn a_silent_source_and_a_closed_destination_fail_on_their_side() {
        let (_source, src) = pair().await;
        let (dst, _sink) = pair().await;
        let err = body(&src, &dst, 100_000, Duration::from_millis(50), LIMIT)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CopyError::Source(e) if e.kind() == io::ErrorKind::TimedOut),
            "{err:?}"
        );

        let (mut source, src) = pair().await;
        let (dst, sink) = pair().await;
        drop(sink);
        let writer = tokio::spawn(async move {
            // The copy fails early: what it does not take is dropped with the socket.
            let _ = source.write_all(&pattern(4 << 20)).await;
        });
        let err = body_of(&src, &dst, 4 << 20).await.unwrap_err();
        assert!(matches!(err, CopyError::Destination(_)), "{err:?}");
        drop(src);
        writer.await.unwrap();
    }

    async fn body_of(src: &TcpStream, dst: &TcpStream, len: u64) -> Result<u64, CopyError> {
        body(src, dst, len, LIMIT, LIMIT).await
    }
}
