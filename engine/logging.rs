//! Log output: `SLUICE_LOG` (an `EnvFilter` directive, default `warn`; the daemon's own lines
//! at `info`) to standard error, as text or as JSON lines ([`LogFormat`]), with every
//! registered secret redacted from each line, whichever crate logged it.
//!
//! In JSON, each line is one object: `timestamp`, `level`, `target`, `message`, the event's
//! fields, and `span` — the run it belongs to (`job`, `origin`, `run_id`) when the daemon
//! logged it inside one. Lines written with [`stderr_line`] become `WARN` events (`ERROR` for errors), so
//! the stream stays one JSON object per line.
//!
//! Secrets (values of `${env:...}` and `${file:...}`) are registered as configs are resolved
//! ([`crate::config::interpolate::Redactor::process`]). A library logging a resolved path or
//! URL at `debug` level would print them; each formatted event is therefore buffered and
//! written only after redaction.

use std::io::Write;

use crate::config::interpolate::Redactor;

thread_local! {
    /// Set while [`catch_quietly`] runs on this thread: its panics are expected and reported as
    /// errors, not printed.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A panic caught by [`catch_quietly`]: its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Panic(pub String);

/// Runs `f`, returning its panic as `Err` instead of unwinding further and without printing
/// it. For library calls known to panic on damaged input (arrow-ipc 59 decoding a Parquet
/// file's `ARROW:schema`, apache/arrow-rs#10437), so the caller can report the file.
///
/// # Errors
/// [`Panic`] with the panic's message.
pub fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, Panic> {
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result.map_err(|p| Panic(crate::producer::panic_message(p.as_ref())))
}

/// True while [`catch_quietly`] runs on this thread (for a panic hook that must let those
/// expected panics through, such as a fuzz target's).
pub fn in_catch_quietly() -> bool {
    QUIET.with(std::cell::Cell::get)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-30T02:00:00.123456Z  INFO sluice::daemon: job flights: …` (colours only on a
    /// terminal).
    Text,
    /// One JSON object per line (the `tracing-subscriber` JSON format, fields flattened).
    Json,
}

/// Set by [`init`] for JSON output.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the global subscriber and the panic hook (a panic message, redacted, on standard
/// error; none inside [`catch_quietly`]). `default_filter` applies when `SLUICE_LOG` is not
/// set. Call once, first thing in `main`.
pub fn init(format: LogFormat, default_filter: &str) {
    std::panic::set_hook(Box::new(|info| {
        if !in_catch_quietly() {
            stderr_line(&format!("{info}"));
        }
    }));
    // delta-rs and its kernel log states Sluice handles (a table that does not exist yet is
    // an ERROR line, a merge metric it derives a WARN); their failures come back as errors,
    // which Sluice reports. `SLUICE_LOG` shows them when wanted.
    let default_filter = format!(
        "{default_filter},deltalake_core=error,buoyant_kernel=off,buoyant_kernel_engine=off"
    );
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactedStderr);
    match format {
        LogFormat::Text => {
            use std::io::IsTerminal;
            builder.with_ansi(std::io::stderr().is_terminal()).init();
        }
        LogFormat::Json => {
            JSON.store(true, std::sync::atomic::Ordering::Relaxed);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .init();
        }
    }
}

/// Makes one [`RedactedLine`] per event.
struct RedactedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactedStderr {
    type Writer = RedactedLine;

    fn make_writer(&'a self) -> RedactedLine {
        RedactedLine(Vec::new())
    }
}

/// One formatted event, written to standard error redacted when dropped.
struct RedactedLine(Vec<u8>);

impl Write for RedactedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let redacted = Redactor::process().redact(&text);
        let _ = std::io::stderr().lock().write_all(redacted.as_bytes());
    }
}

/// Writes one line (a warning or note for the user) to standard error, redacted, ignoring a
/// failed write: after a commit, a full disk on stderr must not turn into a panic and a
/// failed run that a scheduler would load again.
pub fn stderr_line(text: &str) {
    if JSON.load(std::sync::atomic::Ordering::Relaxed) {
        if text.starts_with("error") {
            tracing::error!(target: "sluice", "{text}");
        } else {
            tracing::warn!(target: "sluice", "{text}");
        }
        return;
    }
    let mut line = Redactor::process().redact(text);
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
