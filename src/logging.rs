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
            if b.is_empty() {
                return;
            }
            // A full-sized buffer in its place: grown from empty, it was reallocated and
            // copied a dozen times between flushes (300 instructions per request line).
            let size = b.capacity().max(FLUSH_AT + FLUSH_AT / 4);
            std::mem::replace(&mut *b, Vec::with_capacity(size))
        };
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&pending);
        let _ = err.flush();
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

/// The installed buffer and format, for [`write_line`]'s fast path.
static FAST: std::sync::OnceLock<(Buffered, LogFormat, bool)> = std::sync::OnceLock::new();

thread_local! {
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Writes one log line built by `build` straight into the log buffer, when this module's
/// subscriber is installed: the request log line is the one line written per request, and
/// building it by hand costs a fraction of going through the formatter's field visitors.
/// `build` gets the line buffer, the format and whether ANSI colours are on. Returns false
/// when the fast path is not available (another subscriber, e.g. in tests); the caller then
/// logs through `tracing`.
pub fn write_line(build: impl FnOnce(&mut String, LogFormat, bool)) -> bool {
    let Some((buf, format, ansi)) = FAST.get() else {
        return false;
    };
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        build(&mut line, *format, *ansi);
        line.push('\n');
        let mut w = buf.make_writer();
        let _ = w.write(line.as_bytes());
    });
    true
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
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(shared.clone())
        .with_ansi(ansi)
        .with_target(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_err() {
        return LogGuard { shared: None };
    }
    let _ = FAST.set((shared.clone(), format, ansi));
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
