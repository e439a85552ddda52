//! Sockets for the proxy's unit tests: real connections over loopback.

use tokio::net::TcpStream;

/// A client socket and the server's end of its connection, over loopback.
pub(crate) async fn connected() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}
