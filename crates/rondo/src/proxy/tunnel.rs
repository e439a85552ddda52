//! Tunnels: relaying bytes both ways once a connection stops being HTTP — TCP mode, WebSocket and other
//! upgrades — counting them, and closing both ends when neither has sent a byte for the
//! upstream's `tunnel_timeout` (HAProxy's `timeout tunnel`, nginx's `proxy_timeout` for TCP):
//! a peer that vanished without a FIN would otherwise hold two descriptors for ever.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What a relay carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Relayed {
    /// Bytes read from the client (and sent to the backend).
    pub(crate) from_client: u64,
    /// Bytes read from the backend (and sent to the client).
    pub(crate) from_backend: u64,
    /// Ended because nothing moved for the idle limit.
    pub(crate) idled_out: bool,
}

/// Copies `client` ↔ `backend` until both directions are closed, one fails, or nothing moved
/// for `idle`.
pub(crate) async fn relay<A, B>(client: &mut A, backend: &mut B, idle: Duration) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (from_client, from_backend) = (Cell::new(0), Cell::new(0));
    let last = Cell::new(Instant::now());
    let idled_out = {
        let mut client = Counted {
            inner: client,
            read: &from_client,
            last: &last,
        };
        let mut backend = Counted {
            inner: backend,
            read: &from_backend,
            last: &last,
        };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                _ = &mut copy => break false,
                () = tokio::time::sleep_until(last.get() + idle) => {
                    // Bytes that moved while asleep moved the deadline: sleep again.
                    if last.get() + idle <= Instant::now() {
                        break true;
                    }
                }
            }
        }
    };
    Relayed {
        from_client: from_client.get(),
        from_backend: from_backend.get(),
        idled_out,
    }
}

/// A stream that counts the bytes read from it and when the last ones came: wrapped around
/// each end, it measures both directions even when the relay ends in an error.
struct Counted<'a, S: ?Sized> {
    inner: &'a mut S,
    read: &'a Cell<u64>,
    last: &'a Cell<Instant>,
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.read.set(self.read.get() + n);
            self.last.set(Instant::now());
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn bytes_are_counted_and_silence_ends_the_relay() {
        // The relay counts in `Cell`s: it runs on its worker's thread, as the proxy runs it.
        tokio::task::LocalSet::new()
            .run_until(counted_then_idle())
            .await;
    }

    async fn counted_then_idle() {
        let (mut client, mut client_end) = tokio::io::duplex(64);
        let (mut backend, mut backend_end) = tokio::io::duplex(64);
        let idle = Duration::from_secs(600);
        let relay =
            tokio::task::spawn_local(async move { relay(&mut client, &mut backend, idle).await });
        client_end.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        backend_end.read_exact(&mut got).await.unwrap();
        backend_end.write_all(b"hi").await.unwrap();
        let mut back = [0u8; 2];
        client_end.read_exact(&mut back).await.unwrap();
        // Traffic just before the limit keeps it open…
        tokio::time::sleep(idle - Duration::from_secs(1)).await;
        client_end.write_all(b"!").await.unwrap();
        backend_end.read_exact(&mut got[..1]).await.unwrap();
        tokio::time::sleep(idle - Duration::from_secs(1)).await;
        assert!(!relay.is_finished());
        // …and a whole `idle` of silence closes it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let done = relay.await.unwrap();
        assert_eq!(
            done,
            Relayed {
                from_client: 6,
                from_backend: 2,
                idled_out: true
            }
        );
    }

    #[tokio::test]
    async fn a_closed_end_ends_the_relay_before_the_limit() {
        let (mut client, client_end) = tokio::io::duplex(64);
        let (mut backend, backend_end) = tokio::io::duplex(64);
        drop(client_end);
        drop(backend_end);
        let done = relay(&mut client, &mut backend, Duration::from_secs(600)).await;
        assert!(!done.idled_out);
    }
}
