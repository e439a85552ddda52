//! Moving a body from one socket to the other without holding it: a bounded buffer, read,
//! write, repeat, so a 1 GiB upload costs one buffer of memory. The framing decides where
//! the body ends; bytes past the end (a pipelined next request) stay in the buffer.

use std::io;
use std::time::Duration;

use super::stream::Io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::chunked::ChunkedDecoder;
use super::head::Framing;

/// Bytes read at a time. 16 KiB matches HAProxy's buffer and nginx's default
/// `proxy_buffer_size` × 2-4: large enough that syscalls are amortised, small enough for
/// thousands of concurrent transfers.
pub(crate) const CHUNK: usize = 16 * 1024;

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
}

/// Copies one body framed by `framing` from `src` to `dst`, preceded by `head` (sent with
/// the first body bytes, so a small message costs one write). `buf` starts with bytes
/// already read from `src`; when the body ends, it holds whatever came after it. Returns the
/// number of body bytes copied.
pub(crate) async fn copy(
    framing: Framing,
    src: &mut impl Io,
    dst: &mut impl Io,
    buf: &mut Vec<u8>,
    limits: Limits,
    head: &[u8],
) -> Result<u64, CopyError> {
    let mut head = head;
    let mut copied = 0u64;
    match framing {
        Framing::Empty => {
            write_timed(dst, head, limits.write)
                .await
                .map_err(CopyError::Destination)?;
        }
        Framing::Length(total) => {
            let mut remaining = total;
            loop {
                let take = (buf.len() as u64).min(remaining) as usize;
                if take > 0 {
                    write2_timed(dst, std::mem::take(&mut head), &buf[..take], limits.write)
                        .await
                        .map_err(CopyError::Destination)?;
                    buf.drain(..take);
                    remaining -= take as u64;
                    copied += take as u64;
                }
                if remaining == 0 {
                    break;
                }
                if read_timed(src, buf, limits.read).await? == 0 {
                    return Err(CopyError::Source(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            loop {
                let take = decoder.feed(buf).map_err(|_| CopyError::Framing)?;
                if take > 0 {
                    write2_timed(dst, std::mem::take(&mut head), &buf[..take], limits.write)
                        .await
                        .map_err(CopyError::Destination)?;
                    buf.drain(..take);
                    copied += take as u64;
                }
                if decoder.is_done() {
                    break;
                }
                if read_timed(src, buf, limits.read).await? == 0 {
                    return Err(CopyError::Source(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
        Framing::UntilClose => loop {
            if !buf.is_empty() {
                write2_timed(dst, std::mem::take(&mut head), buf, limits.write)
                    .await
                    .map_err(CopyError::Destination)?;
                copied += buf.len() as u64;
                buf.clear();
            }
            if read_timed(src, buf, limits.read).await? == 0 {
                if !head.is_empty() {
                    write_timed(dst, head, limits.write)
                        .await
                        .map_err(CopyError::Destination)?;
                }
                break;
            }
        },
    }
    Ok(copied)
}
