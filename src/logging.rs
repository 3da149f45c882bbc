//! Log output: human-readable lines or JSON, filtered by `RUST_LOG` (default `info`).
//!
//! Lines go to stderr through a buffer that a background thread flushes every 100 ms (and
//! whenever it holds 64 KiB), the way nginx's `access_log … buffer=` works: one request log line
//! per request must not cost one `write` system call per request. [`init`] returns a guard
//! that flushes what is left when it is dropped, so nothing is lost at exit.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

const FLUSH_AT: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A shared line buffer in front of stderr.
#[derive(Clone, Default)]
struct Buffered {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl Buffered {
    fn flush_now(&self) {
        let pending = {
            let mut b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *b)
        };
        if !pending.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&pending);
            let _ = err.flush();
        }
    }
}

/// One event's writer: appends to the shared buffer.
struct LineWriter {
    shared: Buffered,
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut b = self.shared.buf.lock().unwrap_or_else(|p| p.into_inner());
            b.extend_from_slice(data);
            b.len() >= FLUSH_AT
        };
        if full {
            self.shared.flush_now();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffered {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            shared: self.clone(),
        }
    }
}

/// Flushes the log buffer when dropped. Keep it alive for the life of the program.
pub struct LogGuard {
    shared: Option<Buffered>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(s) = &self.shared {
            s.flush_now();
        }
    }
}

/// Installs the global subscriber, writing to stderr. Safe to call more than once (later calls
/// do nothing and return a guard that does nothing), so tests can call it freely.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let shared = Buffered::default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(shared.clone())
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_err() {
        return LogGuard { shared: None };
    }
    let flusher = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(move || {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                flusher.flush_now();
            }
        });
    if spawned.is_err() {
        // No flusher thread: the buffer still flushes at 64 KiB and at exit.
        eprintln!("hookwarden: cannot start the log flusher thread; logs flush at 64 KiB");
    }
    LogGuard {
        shared: Some(shared),
    }
}
