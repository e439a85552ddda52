//! `rondo bench`: a load generator for HTTP/1.1, HTTP/2 and gRPC unary calls, in the spirit
//! of wrk, oha and ghz.
//!
//! The seed's benchmark fired simulated requests at simulated servers; this one opens real
//! keep-alive connections to a URL, sends as fast as the server answers (or at a fixed
//! open-loop rate), and reports throughput, success rate, status codes, errors by kind,
//! latency percentiles from an HDR histogram, bytes read and, given a header that names the
//! backend, each backend's share of responses — which is how you see a balancer's
//! round robin from the outside.
//!
//! ## Why the HTTP/1.1 client is hand-written
//!
//! A load generator must be faster than the server it measures, or it measures itself. A
//! general-purpose client (hyper's included) builds a request object, a header map and a
//! body stream for every request and parses every response header into owned values; wrk,
//! written in C, does none of that and is faster on loopback. So the HTTP/1.1 path
//! (`h1.rs`) sends bytes serialised once, parses the response head in place with `httparse`,
//! skips the body without storing it (`Content-Length`, chunked, or to end of stream), and
//! allocates nothing per request. The HTTP/2 path uses hyper, since HPACK and flow control are
//! not worth writing again and HTTP/2 load tests measure the server's multiplexing.
//!
//! Each connection is a task with its own statistics (an HDR histogram, status and error
//! counts), merged once at the end: no lock and no shared write per request (see `engine.rs`).
//!
//! ## Using it from code
//!
//! [`generate`] runs a [`LoadSpec`] on the current tokio runtime and returns a [`Report`];
//! [`run`] is the command line (`rondo bench`), which builds its own runtime.

#![forbid(unsafe_code)]

mod args;
mod engine;
mod error;
mod grpc;
mod h1;
mod h2;
mod progress;
mod report;
mod spec;
mod tls;

pub use args::BenchArgs;
pub use error::{BenchError, ErrorKind};
pub use report::{BackendShare, ErrorCounts, GrpcStatus, Latency, Report};
pub use spec::{
    DEFAULT_CONNECTIONS, DEFAULT_DURATION, DEFAULT_TIMEOUT, LoadSpec, ProgressMode, RequestKeys,
    StopHandle,
};
pub use tls::AnyCertificate;

/// Generates the load `spec` describes, on the current tokio runtime, and reports.
///
/// Returns an error only when the run cannot start (see [`BenchError`]); failed requests
/// are counted in the [`Report`]. Call it from a multi-threaded runtime to use more than
/// one core: each connection is a spawned task.
pub async fn generate(spec: &LoadSpec) -> Result<Report, BenchError> {
    let prepared = spec.prepare().await?;
    engine::run(prepared).await
}

/// `rondo bench`: builds a runtime with `--threads` workers, generates the load and prints
/// the report (text, or JSON with `--json`) on stdout.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let spec = args.to_spec()?;
    let threads = args.worker_threads();
    raise_open_files_limit(spec.connections);
    // One worker: a current-thread runtime, which drives every connection from the main
    // thread without the work-stealing machinery (as wrk -t1 does with one event loop).
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = builder.enable_all().build().map_err(BenchError::Runtime)?;
    let report = runtime.block_on(async {
        // Ctrl-C once: stop sending, finish what is in flight, print the report.
        // Twice: leave at once.
        let stop = spec.stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.stop();
                eprintln!(
                    "rondo bench: interrupted, finishing requests in flight (Ctrl-C again to quit)"
                );
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        generate(&spec).await
    })?;
    // Connection tasks have ended; whatever is left (HTTP/2 connection drivers) is dropped.
    runtime.shutdown_background();
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render_text());
    }
    Ok(())
}

/// Raises the soft limit on open files to fit `connections` sockets, as far as the hard
/// limit allows: the usual soft limit (1024) is below what `-c 2000` needs, and the error
/// would otherwise be a wall of connect errors ("Too many open files"). Best effort.
fn raise_open_files_limit(connections: usize) {
    #[cfg(unix)]
    {
        /// Descriptors besides the connections: stdio, the runtime's epoll and eventfd, a
        /// few spare.
        const SPARE: u64 = 64;
        let wanted = u64::try_from(connections)
            .unwrap_or(u64::MAX)
            .saturating_add(SPARE);
        if let Ok(got) = rlimit::increase_nofile_limit(wanted)
            && got < wanted
        {
            eprintln!(
                "rondo bench: warning: the open files limit is {got}, fewer than {connections} \
                 connections need; expect connect errors (raise it with ulimit -n)"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = connections;
}
