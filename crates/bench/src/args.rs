//! `rondo bench`'s command line: [`BenchArgs`], and its conversion to a [`LoadSpec`].

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::error::BenchError;
use super::spec::{DEFAULT_CONNECTIONS, LoadSpec, ProgressMode};

/// Examples and output fields, shown by `rondo bench --help`.
const AFTER_HELP: &str = "\
Examples:
  rondo bench http://127.0.0.1:8080/                  10 connections for 10 s
  rondo bench -c 100 -n 100000 http://127.0.0.1:8080/ exactly 100000 requests
  rondo bench -c 50 -d 30s --rate 2000 URL            open loop at 2000 req/s for 30 s
  rondo bench -m POST -H 'Content-Type: application/json' -b '{\"a\":1}' URL
  rondo bench --backend-header x-backend URL          share of responses per backend
  rondo bench --http2 -c 1 --backend-header x-backend URL
                                                      one HTTP/2 connection: is each request
                                                      its own pick, or is the connection pinned?
  rondo bench --grpc-unary /echo.Echo/Say -c 20 http://127.0.0.1:8080
                                                      gRPC unary calls (h2c), counted by grpc-status
  rondo bench --grpc-unary /pkg.Svc/Get --body-file req.bin -k https://host:443
                                                      a given request message (serialised
                                                      protobuf, e.g. from protoc --encode), over TLS

How it measures:
  Each connection sends one request at a time over keep-alive and reconnects when the
  server closes. Latency runs from the send to the last byte of the response; with --rate,
  when a connection is behind schedule (its previous response came late), it runs from
  the moment the request was due, so a stalled server shows as latency rather than as a
  lower rate (no coordinated omission). A response with any status
  counts as a response; 2xx and 3xx count as success. A request without a complete
  response is an error: connect, timeout, closed (reset or closed mid-response) or other.
  With --grpc-unary a call succeeds when its grpc-status (read from the response headers
  or trailers) is 0 (OK); calls are also counted by grpc-status, \"missing\" when the
  response had none (e.g. an HTTP 503 from a proxy that is not gRPC-aware).

Ctrl-C stops sending, waits for the requests in flight and prints the report; a second
Ctrl-C quits at once.

JSON output (--json), one object:
  url, protocol, connections, target_rate (null for closed loop), duration_s, interrupted,
  requests (responses + errors), responses, successes, success_rate (0..1),
  requests_per_sec (responses / duration_s), status_counts {\"200\": n, ...},
  errors {connect, timeout, closed, other, total}, error_examples {kind: message},
  latency_ms {min, mean, stdev, p50, p90, p95, p99, p99_9, max},
  bytes_read, backend_header, backends [{value, responses, share}], backend_missing,
  grpc_method (null unless --grpc-unary), grpc_status_counts {\"0\": n, \"14\": n,
  \"missing\": n, ...}";

/// Options of `rondo bench`: a load generator for HTTP/1.1, HTTP/2 and gRPC unary calls.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Target URL, http://HOST:PORT/PATH?QUERY or https://… (port 80 or 443 when omitted).
    #[arg(value_name = "URL")]
    pub url: String,

    /// Concurrent connections, each with one request in flight at a time.
    #[arg(short = 'c', long, value_name = "N", default_value_t = DEFAULT_CONNECTIONS)]
    pub connections: usize,

    /// Total requests to send, over all connections. With -d too, whichever comes first
    /// ends the run. Without -n and -d the run lasts 10s.
    #[arg(short = 'n', long, value_name = "N")]
    pub requests: Option<u64>,

    /// How long to run, e.g. 10s, 500ms, 2m. Requests still in flight at the end are
    /// abandoned and not counted.
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Request method.
    #[arg(short = 'm', long, value_name = "METHOD", default_value = "GET")]
    pub method: String,

    /// Request header "Name: value"; repeat for more. A Host header replaces the URL's.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,

    /// Request body, sent with every request (Content-Length is set for you). With
    /// --grpc-unary, the request message (framed for you).
    #[arg(short = 'b', long, value_name = "STRING", conflicts_with = "body_file")]
    pub body: Option<String>,

    /// Read the request body from a file. With --grpc-unary, the serialised request
    /// message (e.g. `protoc --encode=pkg.Request x.proto < req.txt > req.bin`).
    #[arg(long, value_name = "PATH")]
    pub body_file: Option<PathBuf>,

    /// Speak HTTP/2 instead of HTTP/1.1: h2c with prior knowledge on http://, h2 by ALPN on
    /// https://.
    #[arg(long)]
    pub http2: bool,

    /// With https://, accept any certificate (self-signed or for another name), like
    /// `curl -k`. The handshake is still complete, so its cost is measured.
    #[arg(short = 'k', long)]
    pub insecure: bool,

    /// A request without a complete response after this long counts as a timeout error
    /// (a connect that takes this long, as a connect error). 0 waits forever.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Open loop: send this many requests per second in total, whatever the response
    /// times, and measure latency from when each request was due. Give enough
    /// connections to keep up (rate x expected latency). Without it, closed loop: each
    /// connection sends its next request as soon as the previous one is answered.
    #[arg(long, value_name = "REQ_PER_SEC")]
    pub rate: Option<f64>,

    /// Print the report as one JSON object on stdout (fields listed in --help).
    #[arg(long)]
    pub json: bool,

    /// Count responses by the value of this response header (e.g. x-backend, set by each
    /// backend behind a balancer) and print how many each value got: how requests spread
    /// over backends. Works with HTTP/1.1, --http2 and --grpc-unary.
    #[arg(long, value_name = "NAME")]
    pub backend_header: Option<String>,

    /// Make gRPC unary calls to this method (/package.Service/Method) instead of plain
    /// requests: HTTP/2 (h2c on http://, h2 on https://), POST with content-type
    /// application/grpc and te: trailers, one small fixed message (-b/--body-file, default
    /// the empty message, which every request type accepts). Calls count as successes when
    /// grpc-status is 0. The URL is then only scheme, host and port.
    #[arg(long, value_name = "PATH", conflicts_with = "method")]
    pub grpc_unary: Option<String>,

    /// Runtime worker threads [default: number of CPU cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Progress display on stderr. With --json, auto means off.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

impl BenchArgs {
    /// The library form of these options. Reads `--body-file`; checks the header syntax.
    /// Everything else is checked when the load starts.
    pub fn to_spec(&self) -> Result<LoadSpec, BenchError> {
        let mut spec = LoadSpec::new(self.url.clone());
        spec.connections = self.connections;
        spec.requests = self.requests;
        spec.duration = self.duration;
        spec.method = self.method.clone();
        for header in &self.headers {
            let (name, value) =
                header
                    .split_once(':')
                    .ok_or_else(|| BenchError::InvalidHeader {
                        header: header.clone(),
                        reason: "expected \"Name: value\"".into(),
                    })?;
            spec.headers.push((name.trim().into(), value.trim().into()));
        }
        spec.body = match (&self.body, &self.body_file) {
            (Some(body), _) => Bytes::from(body.clone()),
            (None, Some(path)) => {
                Bytes::from(std::fs::read(path).map_err(|source| BenchError::BodyFile {
                    path: path.display().to_string(),
                    source,
                })?)
            }
            (None, None) => Bytes::new(),
        };
        spec.http2 = self.http2;
        spec.insecure = self.insecure;
        spec.timeout = (!self.timeout.is_zero()).then_some(self.timeout);
        spec.rate = self.rate;
        spec.backend_header = self.backend_header.clone();
        spec.grpc_unary = self.grpc_unary.clone();
        spec.progress = if self.json && self.progress == ProgressMode::Auto {
            // Scripts reading JSON do not want a bar on their terminal either way; it still
            // goes to stderr, so ask for it explicitly with --progress bar.
            ProgressMode::Off
        } else {
            self.progress
        };
        Ok(spec)
    }

    /// Worker threads to use: `--threads`, or the number of cores.
    pub fn worker_threads(&self) -> usize {
        self.threads
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}
