//! A gRPC backend for benchmarks: the tests' tonic echo server (`tests/common/grpc.rs`,
//! `echo.Echo/Say` plus `grpc.health.v1`), started on a loopback port and kept running.
//!
//! `bench/proxies.sh` puts rondo, nginx (`grpc_pass`) and HAProxy (`proto h2`) in front of
//! it to measure CPU per gRPC call; it is the same server the gRPC tests prove things
//! against, so the benchmark and the tests talk to one implementation.
//!
//! ```text
//! cargo build --release --example grpc_backend
//! target/release/examples/grpc_backend [NAME] [ADDRESS]   # default g1 127.0.0.1:0
//! ```
//!
//! Prints the address it listens on as one line on stdout, then serves until killed.

#[path = "../tests/common/grpc.rs"]
mod grpc;

use std::net::SocketAddr;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "g1".into());
    let addr: SocketAddr = args
        .next()
        .as_deref()
        .unwrap_or("127.0.0.1:0")
        .parse()
        .context("the address must be IP:PORT, e.g. 127.0.0.1:50051")?;
    // One thread, as the proxies measured in front of it have one worker each.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let backend = grpc::GrpcBackend::start_at(&name, addr, None).await?;
        println!("{}", backend.addr());
        std::future::pending::<()>().await;
        Ok(())
    })
}
