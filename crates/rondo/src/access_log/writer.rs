//! The thread that owns the log file. Requests hand it finished lines through a bounded
//! channel and never wait: when the channel is full (the disk is slower than the traffic)
//! the line is dropped and counted, as a busy proxy must not stall on its log. Lines are
//! written through a buffer that is flushed whenever the channel runs empty, so a quiet
//! proxy's log is current and a busy one's is written in large blocks.
//!
//! `reopen` (SIGUSR1, logrotate's convention shared with nginx) closes the file and opens
//! the path again, so after logrotate renames `access.log` the new lines go to a new file.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// Lines that may wait for the writer: at ~200 bytes a line, 1.6 MB at most, several
/// seconds of a busy proxy's traffic while the disk stalls.
pub(crate) const CAPACITY: usize = 8192;

/// The writer's buffer: large writes keep the syscall count low under load.
const BUFFER_BYTES: usize = 64 * 1024;

/// What the writer thread is asked to do.
pub(crate) enum Message {
    /// Append this line.
    Line(String),
    /// Close and open the file again.
    Reopen,
    /// Flush, then answer (for tests and shutdown).
    Flush(SyncSender<()>),
}

/// Counters the writer and the request path share.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Lines dropped because the channel was full.
    pub(crate) dropped: AtomicU64,
    /// Lines lost to write errors (disk full, file removed without a reopen …).
    pub(crate) failed: AtomicU64,
}

/// The request path's end of the channel.
#[derive(Debug)]
pub(crate) struct Sender {
    tx: SyncSender<Message>,
    pub(crate) counts: Arc<Counts>,
}

impl Sender {
    /// Queues a line without waiting; counts it as dropped when the queue is full.
    pub(crate) fn send(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Message::Line(line))
        {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Asks the writer to reopen its file; waits for room (a reopen must not be lost).
    pub(crate) fn reopen(&self) {
        let _ = self.tx.send(Message::Reopen);
    }

    /// Waits until every line queued before this call is written to the file.
    pub(crate) fn flush(&self) {
        let (ack, done) = sync_channel(1);
        if self.tx.send(Message::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}

/// Opens `path` (creating it and appending) and starts the writer thread.
pub(crate) fn start(path: &Path) -> std::io::Result<Sender> {
    let file = open(path)?;
    let (tx, rx) = sync_channel(CAPACITY);
    let counts = Arc::new(Counts::default());
    let writer = Writer {
        path: path.to_owned(),
        out: BufWriter::with_capacity(BUFFER_BYTES, file),
        counts: Arc::clone(&counts),
    };
    std::thread::Builder::new()
        .name("rondo-access-log".into())
        .spawn(move || writer.run(rx))?;
    Ok(Sender { tx, counts })
}

/// Opens `path` as the writer does (created if missing, appended to).
pub(crate) fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    counts: Arc<Counts>,
}

impl Writer {
    /// Runs until every sender is gone, then flushes.
    fn run(mut self, rx: Receiver<Message>) {
        while let Ok(first) = rx.recv() {
            self.handle(first);
            while let Ok(next) = rx.try_recv() {
                self.handle(next);
            }
            self.flush();
        }
        self.flush();
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Line(line) => {
                if self.out.write_all(line.as_bytes()).is_err() {
                    self.counts.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Message::Reopen => {
                self.flush();
                match open(&self.path) {
                    Ok(file) => self.out = BufWriter::with_capacity(BUFFER_BYTES, file),
                    Err(e) => tracing::error!(
                        path = %self.path.display(),
                        "reopening the access log failed, writing on to the old file: {e}"
                    ),
                }
            }
            Message::Flush(ack) => {
                self.flush();
                let _ = ack.send(());
            }
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %self.path.display(), "writing the access log failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_do_not_fit_are_dropped_and_counted_without_waiting() {
        let (tx, _rx) = sync_channel(2);
        let sender = Sender {
            tx,
            counts: Arc::default(),
        };
        for _ in 0..5 {
            sender.send("x\n".to_owned());
        }
        assert_eq!(sender.counts.dropped.load(Ordering::Relaxed), 3);
    }
}
