//! `rondo status`: fetches `/api/v1/stats` from a running balancer's admin API and prints
//! a table (coloured when stdout is a terminal), or passes the JSON through with `--json`.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use anyhow::Context as _;

use super::admin_client::fetch;
use crate::admin::stats::{BackendStats, Stats};
use crate::upstream::etcd::EtcdStatus;

/// `rondo status` options.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The admin API: `[admin] listen` of the balancer, as HOST:PORT or http://HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// Print the JSON of /api/v1/stats as it came.
    #[arg(long)]
    pub json: bool,
    /// The admin token, needed when the admin API listens off loopback (default: the
    /// `RONDO_ADMIN_TOKEN` environment variable).
    #[arg(long)]
    pub token: Option<String>,
}

/// Runs `rondo status`.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let token = args
        .token
        .or_else(|| std::env::var("RONDO_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let body = rt.block_on(fetch(&args.admin, "/api/v1/stats", token.as_deref()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        out.write_all(&body)?;
        out.write_all(b"\n")?;
        return Ok(());
    }
    let stats: Stats = serde_json::from_slice(&body)
        .context("the admin API answered something that is not rondo's statistics")?;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    out.write_all(render(&stats, colour).as_bytes())?;
    Ok(())
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";

fn state_colour(state: &str) -> &'static str {
    match state {
        "up" => "\x1b[32m",
        "backup" => "\x1b[36m",
        "draining" | "removed" => "\x1b[33m",
        _ => "\x1b[31m",
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms:.1}")
    }
}

/// The table `rondo status` prints.
pub fn render(stats: &Stats, colour: bool) -> String {
    let paint = |code: &str, text: &str| {
        if colour {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "uptime {:.0}s", stats.uptime_seconds);
    if let Some(etcd) = &stats.etcd {
        let line = etcd_line(etcd);
        let painted = match etcd.state.as_str() {
            "synced" => line,
            _ => paint(state_colour("down"), &line),
        };
        let _ = writeln!(out, "{painted}");
        for r in &etcd.refused {
            let _ = writeln!(
                out,
                "  {}",
                paint(
                    state_colour("down"),
                    &format!("refused {}: {}", r.key, r.error)
                )
            );
        }
    }
    let headers = [
        "BACKEND", "ADDRESS", "STATE", "WEIGHT", "NOW", "REQUESTS", "SHARE", "OK%", "P50ms",
        "P95ms", "P99ms", "CONNS", "BREAKER",
    ];
    for u in &stats.upstreams {
        let _ = writeln!(
            out,
            "\n{} {}",
            paint(BOLD, &format!("upstream {}", u.name)),
            paint(
                DIM,
                &format!(
                    "{} · {} · {}/{} healthy · {} requests · {:.1} req/s avg · {} retries",
                    u.algorithm,
                    u.mode,
                    u.healthy_servers,
                    u.total_servers,
                    u.total_requests,
                    u.requests_per_second,
                    u.retries
                )
            )
        );
        let rows: Vec<[String; 13]> = u
            .backends
            .iter()
            .map(|b: &BackendStats| {
                let share = if u.total_requests > 0 {
                    100.0 * b.total_requests as f64 / u.total_requests as f64
                } else {
                    0.0
                };
                [
                    b.id.clone(),
                    b.address.clone(),
                    b.state.clone(),
                    format!("{}", b.weight),
                    format!("{}", b.current_weight),
                    b.total_requests.to_string(),
                    format!("{share:.1}%"),
                    format!("{:.1}", b.success_rate * 100.0),
                    fmt_ms(b.p50_latency_ms),
                    fmt_ms(b.p95_latency_ms),
                    fmt_ms(b.p99_latency_ms),
                    b.current_connections.to_string(),
                    b.breaker.clone(),
                ]
            })
            .collect();
        let mut widths = headers.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        // Text columns left-aligned, numbers right-aligned.
        let left = |i: usize| matches!(i, 0 | 1 | 2 | 12);
        let line = |cells: &[String], header: bool| {
            let mut s = String::from(" ");
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                let text = if header {
                    paint(DIM, cell)
                } else if i == 2 {
                    paint(state_colour(cell), cell)
                } else if i == 12 && cell != "closed" {
                    paint(state_colour("down"), cell)
                } else {
                    cell.clone()
                };
                s.push(' ');
                if left(i) {
                    s.push_str(&text);
                    s.push_str(&" ".repeat(pad));
                } else {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(&text);
                }
                s.push(' ');
            }
            s.trim_end().to_owned()
        };
        let _ = writeln!(out, "{}", line(&headers.map(String::from), true));
        for row in &rows {
            let _ = writeln!(out, "{}", line(row, false));
        }
        // Backend names: how many addresses each gives, and why one gives none or is stale.
        for d in &u.dns {
            let what = match (&d.error, d.resolved) {
                (None, _) => format!("{} addresses", d.addresses.len()),
                (Some(e), false) => paint(state_colour("down"), &format!("never resolved: {e}")),
                (Some(e), true) => paint(
                    state_colour("down"),
                    &format!("{} last known addresses kept: {e}", d.addresses.len()),
                ),
            };
            let _ = writeln!(out, "  dns {}: {what}", d.name);
        }
        if let Some(why) = &u.down_by_checks {
            let _ = writeln!(
                out,
                "  {}",
                paint(
                    state_colour("down"),
                    &format!("every backend is down: {why}")
                )
            );
        }
    }
    out
}

/// "discovery: etcd synced at revision 42 (http://…)", or stale since when and why.
fn etcd_line(etcd: &EtcdStatus) -> String {
    let endpoints = etcd.endpoints.join(", ");
    match (etcd.state.as_str(), etcd.stale_since_ms) {
        ("synced", _) => format!(
            "discovery: etcd synced at revision {} ({endpoints}, prefix {})",
            etcd.revision, etcd.prefix
        ),
        (_, Some(ms)) => {
            let since = std::time::UNIX_EPOCH + Duration::from_millis(ms);
            let ago = std::time::SystemTime::now()
                .duration_since(since)
                .map_or(0, |d| d.as_secs());
            let serving = if etcd.reads > 0 {
                "the last known backends serve"
            } else {
                "the file's backends serve"
            };
            format!(
                "discovery: stale since {} ({ago}s ago): {}; {serving}",
                humantime::format_rfc3339_seconds(since),
                etcd.error.as_deref().unwrap_or("etcd unreachable"),
            )
        }
        _ => format!("discovery: etcd connecting ({endpoints})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etcd_line_says_synced_or_stale_since_when_and_why() {
        let mut etcd = EtcdStatus {
            endpoints: vec!["http://10.0.0.1:2379".into()],
            prefix: "/rondo".into(),
            state: "synced".into(),
            revision: 42,
            stale_since_ms: None,
            error: None,
            refused: Vec::new(),
            reads: 1,
            failures: 0,
        };
        assert_eq!(
            etcd_line(&etcd),
            "discovery: etcd synced at revision 42 (http://10.0.0.1:2379, prefix /rondo)"
        );
        etcd.state = "stale".into();
        etcd.stale_since_ms = Some(1_795_987_915_000);
        etcd.error = Some("cannot reach etcd at http://10.0.0.1:2379: refused".into());
        let line = etcd_line(&etcd);
        assert!(
            line.starts_with("discovery: stale since 2026-11-29T")
                && line.ends_with("cannot reach etcd at http://10.0.0.1:2379: refused; the last known backends serve"),
            "{line}"
        );
    }
}
