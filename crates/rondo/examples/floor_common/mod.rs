//! What the floor relays share: their command line (all three), and the test over real
//! sockets that the two byte relays (`floor_relay.rs`, `floor_relay_uring.rs`) must pass.

use std::net::{SocketAddr, TcpListener};

use anyhow::{Context as _, bail};

/// The listener and the backend's address from the command line (`PROGRAM LISTEN BACKEND`).
pub(crate) fn listener_and_backend(program: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, backend] = args.as_slice() else {
        bail!(
            "usage: {program} LISTEN BACKEND (two addresses, e.g. 127.0.0.1:8080 127.0.0.1:9001)"
        );
    };
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("listen address {listen:?}"))?;
    let backend: SocketAddr = backend
        .parse()
        .with_context(|| format!("backend address {backend:?}"))?;
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    Ok((listener, backend))
}

/// Sends 16 MiB each way through a relay that `start` runs (on a thread of its own, with the
/// listener it is given, in front of the backend address) and checks every byte, then that a
/// client's close reaches the backend and the backend's the client. The backend's connections
/// take 4 KiB at a time and start reading late, so the relay's writes to it are cut short and
/// must be finished as it drains.
#[cfg(test)]
#[allow(dead_code)] // floor_http speaks HTTP, not raw bytes: it has tests of its own
pub(crate) fn round_trip_through(start: impl FnOnce(TcpListener, SocketAddr)) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::thread;
    use std::time::Duration;

    use socket2::{Domain, Socket, Type};

    // How long a read may wait before the test fails: bytes lost in the relay show as a read
    // that never ends.
    const PATIENCE: Duration = Duration::from_secs(20);

    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(16).unwrap();
    let backend: TcpListener = socket.into();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay = listener.local_addr().unwrap();
    start(listener, backend.local_addr().unwrap());

    let sent: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
    let expected = sent.clone();
    let server = thread::spawn(move || {
        let (mut conn, _) = backend.accept().unwrap();
        conn.set_read_timeout(Some(PATIENCE)).unwrap();
        thread::sleep(Duration::from_millis(100));
        let mut got = vec![0; expected.len()];
        conn.read_exact(&mut got).unwrap();
        assert!(
            got == expected,
            "the backend got other bytes than the client sent"
        );
        let reply: Vec<u8> = got.iter().rev().copied().collect();
        conn.write_all(&reply).unwrap();
        // The client's close arrives as the end of the stream.
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    });
    let mut client = TcpStream::connect(relay).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let writer = {
        let mut client = client.try_clone().unwrap();
        let sent = sent.clone();
        thread::spawn(move || client.write_all(&sent).unwrap())
    };
    let mut reply = vec![0; sent.len()];
    client.read_exact(&mut reply).unwrap();
    writer.join().unwrap();
    assert!(
        reply.iter().eq(sent.iter().rev()),
        "the reply came back changed"
    );
    client.shutdown(Shutdown::Write).unwrap();
    server.join().unwrap();
    // The backend's side closed too: the client reads the end.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}
