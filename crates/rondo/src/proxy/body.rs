//! Moving a body from one socket to the other without holding it: a bounded buffer, read,
//! write, repeat, so a 1 GiB upload costs one buffer of memory. The framing decides where
//! the body ends; bytes past the end (a pipelined next request) stay in the buffer.

use std::io;
use std::time::Duration;

use super::stream::Io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::chunked::ChunkedDecoder;
use super::head::Framing;
use crate::clock::timeout;

/// Bytes read at a time. 16 KiB matches HAProxy's buffer and nginx's default
/// `proxy_buffer_size` × 2-4: large enough that syscalls are amortised, small enough for
/// thousands of concurrent transfers.
pub(crate) const CHUNK: usize = 16 * 1024;

/// Most room a read of a long body gets. A body of known length with more than [`CHUNK`]
/// still to come, or one of unknown length (chunked, until close) once a read filled all its
/// room, is read in pieces of up to this much rather than 16–32 KiB at a time: with
/// 256 KiB responses at 64 connections, the proxy's reads and writes per request fell from
/// 9.8 to 4.1 each and p99 from a median of 38 ms to 15 ms, below HAProxy's 21
/// (docs/performance.md, session 18). Only the bytes a read brings are touched. Responses
/// relayed to HTTP/2 clients are read in smaller pieces (`h1_upstream::read_more`).
pub(crate) const LONG_BODY_READ: usize = 8 * CHUNK;

/// Which side failed while a body was moving.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    /// Reading from the source failed, timed out, or it closed before the body ended.
    #[error("reading the body failed: {0}")]
    Source(io::Error),
    /// Writing to the destination failed or timed out.
    #[error("writing the body failed: {0}")]
    Destination(io::Error),
    /// The chunked framing was malformed.
    #[error("malformed chunked body")]
    Framing,
    /// The chunks announced more than [`Limits::max_body`].
    #[error("body too large")]
    TooLarge,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

/// Reads more bytes into `buf` (growing it by up to [`CHUNK`]); `Ok(0)` at end of stream.
pub(crate) async fn read_some(stream: &mut impl Io, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < CHUNK / 4 {
        buf.reserve(CHUNK);
    }
    stream.read_buf(buf).await
}

async fn read_timed(
    stream: &mut impl Io,
    buf: &mut Vec<u8>,
    limit: Duration,
) -> Result<usize, CopyError> {
    match timeout(limit, read_some(stream, buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(CopyError::Source(e)),
        Err(_) => Err(CopyError::Source(timed_out())),
    }
}

/// Writes all of `bytes`, failing after `limit`.
pub(crate) async fn write_timed(
    stream: &mut impl Io,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    // Flushed: a TLS stream may keep the last records in rustls's buffer otherwise (a no-op
    // on TCP).
    let all = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match timeout(limit, all).await {
        Ok(r) => r,
        Err(_) => Err(timed_out()),
    }
}

/// Writes `first` then `second` with as few system calls as the kernel allows (one
/// `writev` in the common case), failing after `limit`.
pub(crate) async fn write2_timed(
    stream: &mut impl Io,
    first: &[u8],
    second: &[u8],
    limit: Duration,
) -> io::Result<()> {
    if first.is_empty() {
        return write_timed(stream, second, limit).await;
    }
    let all = async {
        let (mut a, mut b) = (first, second);
        while !a.is_empty() {
            let n = stream
                .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_a = n.min(a.len());
            a = &a[from_a..];
            b = &b[n - from_a..];
        }
        stream.write_all(b).await?;
        stream.flush().await
    };
    match timeout(limit, all).await {
        Ok(r) => r,
        Err(_) => Err(timed_out()),
    }
}

/// Timeouts for one copy: how long a read from the source and a write to the destination may
/// take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) read: Duration,
    pub(crate) write: Duration,
    /// The most body a chunked message may carry (`max_body_size`; a length-framed one is
    /// refused from its head); `None` for responses and without the key.
    pub(crate) max_body: Option<u64>,
}

/// Copies one body framed by `framing` from `src` to `dst`, preceded by `head` (sent with
/// the first body bytes, so a small message costs one write). `buf` holds bytes already read
/// from `src`, the body's from `start` on (what is before it, a head already handled, goes
/// with the first bytes written: the body is not moved to the front of the buffer first).
/// When the body ends, `buf` holds whatever came after it. Returns the number of body bytes
/// copied.
pub(crate) async fn copy(
    framing: Framing,
    src: &mut impl Io,
    dst: &mut impl Io,
    buf: &mut Vec<u8>,
    start: usize,
    limits: Limits,
    head: &[u8],
) -> Result<u64, CopyError> {
    let mut head = head;
    let mut start = start.min(buf.len());
    let mut copied = 0u64;
    match framing {
        Framing::Empty | Framing::Length(0) => {
            write_timed(dst, head, limits.write)
                .await
                .map_err(CopyError::Destination)?;
        }
        Framing::Length(total) => {
            let mut remaining = total;
            loop {
                let take = ((buf.len() - start) as u64).min(remaining) as usize;
                if take > 0 {
                    send(dst, &mut head, buf, &mut start, take, limits.write).await?;
                    remaining -= take as u64;
                    copied += take as u64;
                }
                if remaining == 0 {
                    break;
                }
                room_for(buf, remaining);
                read_more(src, buf, limits.read).await?;
            }
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            let mut filled = false;
            loop {
                let take = decoder
                    .feed(&buf[start..])
                    .map_err(|_| CopyError::Framing)?;
                if limits.max_body.is_some_and(|max| decoder.announced() > max) {
                    return Err(CopyError::TooLarge);
                }
                if take > 0 {
                    send(dst, &mut head, buf, &mut start, take, limits.write).await?;
                    copied += take as u64;
                }
                if decoder.is_done() {
                    break;
                }
                if read_unknown(src, buf, limits.read, &mut filled).await? == 0 {
                    return Err(CopyError::Source(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
        Framing::UntilClose => {
            let mut filled = false;
            loop {
                let take = buf.len() - start;
                if take > 0 {
                    send(dst, &mut head, buf, &mut start, take, limits.write).await?;
                    copied += take as u64;
                }
                if read_unknown(src, buf, limits.read, &mut filled).await? == 0 {
                    if !head.is_empty() {
                        write_timed(dst, head, limits.write)
                            .await
                            .map_err(CopyError::Destination)?;
                    }
                    break;
                }
            }
        }
    }
    buf.drain(..start);
    Ok(copied)
}

/// Copies a chunked body from `src` to `dst` as its data alone, preceded by `head`: for an
/// HTTP/1.0 client, which cannot read chunked coding (its response ends with the connection).
/// The framing and the trailers stay behind. `buf` and `start` are as for [`copy`]. Returns
/// the number of data bytes copied.
pub(crate) async fn copy_dechunked(
    src: &mut impl Io,
    dst: &mut impl Io,
    buf: &mut Vec<u8>,
    start: usize,
    limits: Limits,
    head: &[u8],
) -> Result<u64, CopyError> {
    let mut head = head;
    let mut start = start.min(buf.len());
    let mut copied = 0u64;
    let mut decoder = ChunkedDecoder::default();
    let mut filled = false;
    loop {
        let (framing, data) = decoder
            .next_data(&buf[start..])
            .map_err(|_| CopyError::Framing)?;
        start += framing;
        if data > 0 {
            send(dst, &mut head, buf, &mut start, data, limits.write).await?;
            copied += data as u64;
            continue;
        }
        if decoder.in_trailers() {
            start += decoder
                .feed(&buf[start..])
                .map_err(|_| CopyError::Framing)?;
        }
        if decoder.is_done() {
            break;
        }
        buf.drain(..start);
        start = 0;
        if read_unknown(src, buf, limits.read, &mut filled).await? == 0 {
            return Err(CopyError::Source(io::ErrorKind::UnexpectedEof.into()));
        }
    }
    if !head.is_empty() {
        write_timed(dst, head, limits.write)
            .await
            .map_err(CopyError::Destination)?;
    }
    buf.drain(..start);
    Ok(copied)
}

/// Writes the `take` body bytes of `buf` from `start` on, after `head` the first time (one
/// write), then drops them and what was before them from `buf`.
///
/// What is before `start` has been read already (the backend's own head, usually longer than
/// the head sent on): when `head` fits there, it is copied in front of the body and the two
/// leave as one slice, a plain `send` instead of a `writev`.
async fn send(
    dst: &mut impl Io,
    head: &mut &[u8],
    buf: &mut Vec<u8>,
    start: &mut usize,
    take: usize,
    write: Duration,
) -> Result<(), CopyError> {
    let head = std::mem::take(head);
    let written = if !head.is_empty() && head.len() <= *start {
        let from = *start - head.len();
        buf[from..*start].copy_from_slice(head);
        write_timed(dst, &buf[from..*start + take], write).await
    } else {
        write2_timed(dst, head, &buf[*start..*start + take], write).await
    };
    written.map_err(CopyError::Destination)?;
    buf.drain(..*start + take);
    *start = 0;
    Ok(())
}

/// Gives `buf` room for the next read of a body with `remaining` bytes still to come
/// (`u64::MAX` when its length is unknown and the last read filled its room): up to
/// [`LONG_BODY_READ`] when more than [`CHUNK`] is left, the usual room otherwise.
fn room_for(buf: &mut Vec<u8>, remaining: u64) {
    if remaining > CHUNK as u64 {
        make_room(buf, remaining.min(LONG_BODY_READ as u64) as usize);
    }
}

/// Makes room for `want` more bytes in `buf`. An empty buffer too small is replaced rather
/// than grown: growing goes through `realloc`, which copies the whole old allocation (it
/// cannot tell the used part), 16 KiB for an empty spare buffer.
pub(crate) fn make_room(buf: &mut Vec<u8>, want: usize) {
    if buf.capacity() - buf.len() >= want {
        return;
    }
    if buf.is_empty() {
        *buf = Vec::with_capacity(want);
    } else {
        buf.reserve(want);
    }
}

/// Reads more of a body that its framing says is not over: the source closing now is an
/// error.
async fn read_more(src: &mut impl Io, buf: &mut Vec<u8>, read: Duration) -> Result<(), CopyError> {
    if read_timed(src, buf, read).await? == 0 {
        return Err(CopyError::Source(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// Reads more of a body of unknown length (chunked, or until the source closes); `filled`
/// carries whether the last read filled all the room it had, so more may be waiting and this
/// read gets [`LONG_BODY_READ`] of room. `Ok(0)` when the source closed.
async fn read_unknown(
    src: &mut impl Io,
    buf: &mut Vec<u8>,
    read: Duration,
    filled: &mut bool,
) -> Result<usize, CopyError> {
    if *filled {
        room_for(buf, u64::MAX);
    }
    let n = read_timed(src, buf, read).await?;
    *filled = buf.len() == buf.capacity();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, duplex};

    const LIMITS: Limits = Limits {
        read: Duration::from_secs(5),
        write: Duration::from_secs(5),
        max_body: None,
    };

    /// Runs `copy` with `buf` = `already` (the body from `start`), `more` still to come from
    /// the source; returns what reached the destination and what `buf` held afterwards.
    async fn run(
        framing: Framing,
        already: &[u8],
        start: usize,
        more: &[u8],
    ) -> (Vec<u8>, Vec<u8>) {
        let (mut src, mut src_far) = duplex(1 << 20);
        let (mut dst, mut dst_far) = duplex(1 << 20);
        src_far.write_all(more).await.unwrap();
        if matches!(framing, Framing::UntilClose) {
            drop(src_far);
        } else {
            // Kept open: the body must end by its framing, not by the source closing.
            tokio::spawn(async move {
                let _held = src_far;
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
        }
        let mut buf = already.to_vec();
        let copied = copy(
            framing, &mut src, &mut dst, &mut buf, start, LIMITS, b"HEAD;",
        )
        .await
        .unwrap();
        drop(dst);
        let mut out = Vec::new();
        dst_far.read_to_end(&mut out).await.unwrap();
        assert_eq!(copied as usize, out.len() - 5, "{out:?}");
        (out, buf)
    }

    #[tokio::test]
    async fn the_body_is_sent_from_its_offset_and_what_follows_it_stays() {
        // A backend's head, then the body and the start of what comes next.
        let (out, rest) = run(Framing::Length(6), b"H 200\r\n\r\nabcdefNEXT", 9, b"").await;
        assert_eq!(out, b"HEAD;abcdef");
        assert_eq!(rest, b"NEXT");
        // Part of the body in the buffer, the rest read from the source.
        let (out, rest) = run(Framing::Length(6), b"H\r\n\r\nab", 5, b"cdefNEXT").await;
        assert_eq!(out, b"HEAD;abcdef");
        assert_eq!(rest, b"NEXT");
        // No body bytes yet: the head still goes out first, in the same write as the body.
        let (out, rest) = run(Framing::Length(3), b"H\r\n\r\n", 5, b"xyz").await;
        assert_eq!(out, b"HEAD;xyz");
        assert!(rest.is_empty());
        // A head to send longer than the backend's (no room before the body for it): it goes
        // out in a vectored write, the body unmoved.
        let (out, rest) = run(Framing::Length(3), b"H\n\nabcNEXT", 3, b"").await;
        assert_eq!(out, b"HEAD;abc");
        assert_eq!(rest, b"NEXT");
    }

    #[tokio::test]
    async fn an_empty_or_zero_length_body_leaves_only_what_follows_the_head() {
        let (out, rest) = run(Framing::Empty, b"H\r\n\r\nEARLY", 5, b"").await;
        assert_eq!(out, b"HEAD;");
        assert_eq!(rest, b"EARLY");
        let (out, rest) = run(Framing::Length(0), b"H\r\n\r\n", 5, b"").await;
        assert_eq!(out, b"HEAD;");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn chunked_and_until_close_bodies_start_at_the_offset_too() {
        let chunked = b"3\r\nabc\r\n0\r\n\r\n";
        let mut already = b"H\r\n\r\n".to_vec();
        already.extend_from_slice(&chunked[..5]);
        let (out, rest) = run(
            Framing::Chunked,
            &already,
            5,
            &[&chunked[5..], b"NEXT"].concat(),
        )
        .await;
        assert_eq!(out, [b"HEAD;".as_slice(), chunked].concat());
        assert_eq!(rest, b"NEXT");
        let (out, rest) = run(Framing::UntilClose, b"H\r\n\r\nab", 5, b"cd").await;
        assert_eq!(out, b"HEAD;abcd");
        assert!(rest.is_empty());
    }

    /// A source that notes the most bytes one read brought.
    struct LargestRead<S> {
        inner: S,
        largest: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for LargestRead<S> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let before = buf.filled().len();
            let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
            self.largest = self.largest.max(buf.filled().len() - before);
            polled
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for LargestRead<S> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn a_long_body_is_read_in_pieces_of_the_long_body_size() {
        // The whole body waits in the source before the copy starts, so each read takes as
        // much as the buffer's room allows.
        let body: Vec<u8> = (0..600_000).map(|i| (i % 251) as u8).collect();
        let (src, mut src_far) = duplex(1 << 20);
        let (mut dst, mut dst_far) = duplex(1 << 20);
        src_far.write_all(&body).await.unwrap();
        let mut src = LargestRead {
            inner: src,
            largest: 0,
        };
        let mut buf = Vec::with_capacity(2 * CHUNK);
        buf.extend_from_slice(b"H\r\n\r\n");
        let total = body.len() as u64;
        let reader = tokio::spawn(async move {
            let mut out = vec![0; 600_000];
            dst_far.read_exact(&mut out).await.unwrap();
            out
        });
        let copied = copy(
            Framing::Length(total),
            &mut src,
            &mut dst,
            &mut buf,
            5,
            LIMITS,
            b"",
        )
        .await
        .unwrap();
        assert_eq!(copied, total);
        assert!(reader.await.unwrap() == body, "the body arrived intact");
        assert!(
            src.largest >= LONG_BODY_READ,
            "largest read {} bytes",
            src.largest
        );
        assert!(buf.capacity() <= 2 * LONG_BODY_READ, "{}", buf.capacity());
    }

    #[tokio::test]
    async fn a_long_body_of_unknown_length_is_read_in_long_pieces_once_a_read_fills_its_room() {
        let data: Vec<u8> = (0..600_000).map(|i| (i % 251) as u8).collect();
        // One 600,000-byte chunk, then the last chunk, all waiting before the copy starts.
        let mut chunked = format!("{:x}\r\n", data.len()).into_bytes();
        chunked.extend_from_slice(&data);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        unknown_length_read(Framing::Chunked, chunked).await;
        // Until the source closes.
        unknown_length_read(Framing::UntilClose, data).await;
    }

    /// Copies `body` (all of it waiting in the source, which then closes) framed by
    /// `framing`; checks it arrived whole and was read in pieces of [`LONG_BODY_READ`].
    async fn unknown_length_read(framing: Framing, body: Vec<u8>) {
        let (src, mut src_far) = duplex(1 << 20);
        let (mut dst, mut dst_far) = duplex(1 << 20);
        src_far.write_all(&body).await.unwrap();
        drop(src_far);
        let mut src = LargestRead {
            inner: src,
            largest: 0,
        };
        let expected = body.clone();
        let reader = tokio::spawn(async move {
            let mut out = vec![0; expected.len()];
            dst_far.read_exact(&mut out).await.unwrap();
            out == expected
        });
        let mut buf = Vec::with_capacity(2 * CHUNK);
        let copied = copy(framing, &mut src, &mut dst, &mut buf, 0, LIMITS, b"")
            .await
            .unwrap();
        assert_eq!(copied, body.len() as u64, "{framing:?}");
        assert!(
            reader.await.unwrap(),
            "{framing:?}: the body arrived intact"
        );
        assert!(
            src.largest >= LONG_BODY_READ,
            "{framing:?}: largest read {} bytes",
            src.largest
        );
    }

    #[test]
    fn room_is_given_to_long_bodies_only_and_an_empty_buffer_is_replaced_not_grown() {
        let mut small = Vec::with_capacity(2 * CHUNK);
        room_for(&mut small, CHUNK as u64);
        assert_eq!(
            small.capacity(),
            2 * CHUNK,
            "a short rest fits the usual room"
        );
        room_for(&mut small, 10 * LONG_BODY_READ as u64);
        assert_eq!(small.capacity(), LONG_BODY_READ, "at most LONG_BODY_READ");
        let mut held = Vec::with_capacity(CHUNK);
        held.extend_from_slice(b"next");
        room_for(&mut held, 3 * CHUNK as u64);
        assert!(held.capacity() >= 4 + 3 * CHUNK, "{}", held.capacity());
        assert_eq!(held, b"next", "what the buffer held stays");
    }
}
