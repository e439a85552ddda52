//! `rondo bench`: a load generator for HTTP/1.1 and HTTP/2, in the spirit of wrk and oha.
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

mod args;
mod engine;
mod error;
mod h1;
mod h2;
mod progress;
mod report;
mod spec;

pub use args::BenchArgs;
pub use error::{BenchError, ErrorKind};
pub use report::{BackendShare, ErrorCounts, Latency, Report};
pub use spec::{DEFAULT_CONNECTIONS, DEFAULT_DURATION, DEFAULT_TIMEOUT, LoadSpec, ProgressMode};

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
    let report = runtime.block_on(generate(&spec))?;
    // Connection tasks have ended; whatever is left (HTTP/2 connection drivers) is dropped.
    runtime.shutdown_background();
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render_text());
    }
    Ok(())
}
