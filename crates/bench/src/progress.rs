//! Live progress on stderr: an `indicatif` bar on a terminal, or one plain line per second.
//!
//! The display reads the per-connection [`Slot`](super::engine::Slot)s the tasks publish, so
//! it costs the request path nothing but two relaxed stores.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::engine::Shared;
use super::spec::ProgressMode;

/// How often the bar is refreshed: ten times a second is smooth enough to read.
const BAR_TICK: Duration = Duration::from_millis(100);

/// How often a plain line is printed.
const LINE_TICK: Duration = Duration::from_secs(1);

/// Starts the display task for `shared`'s run, if its mode asks for one.
pub(crate) fn start(shared: &Arc<Shared>) -> Option<JoinHandle<()>> {
    let mode = match shared.prepared.progress {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::Off,
        mode => mode,
    };
    let shared = Arc::clone(shared);
    match mode {
        ProgressMode::Off | ProgressMode::Auto => None,
        ProgressMode::Bar => Some(tokio::spawn(bar(shared))),
        ProgressMode::Lines => Some(tokio::spawn(lines(shared))),
    }
}

async fn bar(shared: Arc<Shared>) {
    let p = &shared.prepared;
    // With a request count the bar counts requests; otherwise it counts time.
    let (length, by_count) = match (p.requests, p.duration) {
        (Some(n), _) => (n, true),
        (None, Some(d)) => (u64::try_from(d.as_millis()).unwrap_or(u64::MAX), false),
        (None, None) => (0, true),
    };
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    let template = if by_count {
        "{elapsed:>4} [{wide_bar}] {pos}/{len} {msg}"
    } else {
        "{elapsed:>4} [{wide_bar}] {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut interval = tokio::time::interval(BAR_TICK);
    let mut last = (Instant::now(), 0u64);
    let mut rate = 0.0;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shared.done.notified() => break,
        }
        let (finished, errors) = shared.progress();
        let now = Instant::now();
        let window = now.duration_since(last.0).as_secs_f64();
        if window >= 0.5 {
            rate = finished.saturating_sub(last.1) as f64 / window;
            last = (now, finished);
        }
        if by_count {
            bar.set_position(finished);
        } else {
            let elapsed = now.duration_since(shared.start).as_millis();
            bar.set_position(u64::try_from(elapsed).unwrap_or(u64::MAX).min(length));
        }
        bar.set_message(format!("{finished} requests, {rate:.0}/s, {errors} errors"));
    }
    bar.finish_and_clear();
}

async fn lines(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(LINE_TICK);
    interval.tick().await;
    let mut last = 0u64;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shared.done.notified() => break,
        }
        let (finished, errors) = shared.progress();
        let elapsed = shared.start.elapsed().as_secs_f64();
        eprintln!(
            "rondo bench: {elapsed:6.1} s  {finished:>10} requests  {:>8} in the last second  {errors} errors",
            finished.saturating_sub(last)
        );
        last = finished;
    }
}
