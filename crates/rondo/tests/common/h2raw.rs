//! HTTP/2 spoken frame by frame (RFC 9113), for what a well-behaved client library will not
//! send: streams reset as fast as they open, endless CONTINUATION frames. Only what the tests
//! need: requests are HPACK-encoded without Huffman or indexing, server frames are read raw.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Frame types.
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// Error codes.
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Settings identifiers.
pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// One frame as read.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM.
    pub fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }

    /// The settings of a SETTINGS frame, as (identifier, value).
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }
}

/// A frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix, its first byte or-ed with `flags`.
fn integer(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A string literal without Huffman coding.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// The header block of `GET path` for host `test.local` with `extra` fields, HPACK-encoded
/// without indexing (so every block stands alone).
pub fn get_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    // :method GET and :scheme http are static-table entries 2 and 6.
    let mut out = vec![0x82, 0x86];
    // :path and :authority: literals with the static table's name (4 and 1).
    integer(&mut out, 0, 4, 4);
    string(&mut out, path.as_bytes());
    integer(&mut out, 0, 4, 1);
    string(&mut out, b"test.local");
    for (name, value) in extra {
        out.push(0);
        string(&mut out, name.as_bytes());
        string(&mut out, value.as_bytes());
    }
    out
}

/// A client connection that has sent the preface and its (empty) SETTINGS.
pub struct Conn {
    pub stream: TcpStream,
    /// Settings the server announced.
    pub server_settings: Vec<(u16, u32)>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.unwrap();
        let mut conn = Conn {
            stream,
            server_settings: Vec::new(),
        };
        loop {
            let f = conn
                .next(Duration::from_secs(10))
                .await
                .expect("server SETTINGS");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                conn.server_settings = f.settings();
                conn.send(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
                return conn;
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next frame, or `None` when the connection closed or nothing came within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Frame> {
        let read = async {
            let mut head = [0u8; 9];
            self.stream.read_exact(&mut head).await.ok()?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await.ok()?;
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            Some(Frame {
                kind: head[3],
                flags: head[4],
                stream,
                payload,
            })
        };
        tokio::time::timeout(limit, read).await.ok().flatten()
    }

    /// Reads frames until one of `kind` arrives (`None`: closed or `limit` passed first).
    pub async fn until(&mut self, kind: u8, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self.next(left).await?;
            if f.kind == kind {
                return Some(f);
            }
        }
    }

    /// Reads until the server closes the connection, answering its PINGs (a graceful close
    /// waits for one); the frames read, PINGs left out.
    pub async fn until_closed(&mut self, limit: Duration) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.next(limit).await {
            if f.kind == PING && f.flags & ACK == 0 {
                let _ = self.send(&frame(PING, ACK, 0, &f.payload)).await;
            } else if f.kind != PING {
                frames.push(f);
            }
        }
        frames
    }
}
