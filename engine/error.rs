//! Errors, classed by whose fault they are, each mapped to a documented exit code.
//!
//! | class    | whose fault                                   | exit code |
//! |----------|-----------------------------------------------|-----------|
//! | Config   | the TOML a user wrote (file, line, hint)       | 2         |
//! | Usage    | the command line                              | 2         |
//! | Source   | a source file: missing, unreadable, malformed  | 1         |
//! | Connection | a database: unreachable, dropped, refused    | 1         |
//! | Target   | writing or publishing the target               | 1         |
//! | State    | the state folder (reports, locks)              | 1         |
//! | Engine   | DataFusion failed while executing a plan       | 1         |
//! | Internal | a bug in Sluice                               | 1         |
//!
//! A failed dataset check is not an error: the run completes, writes its quarantine and report,
//! does not commit the target, and `sluice run` exits 3 (see [`crate::report::RunStatus`]).

use std::path::PathBuf;

use crate::diagnostic::{Diagnostic, Diagnostics};

/// Exit code: success, warnings allowed.
pub const EXIT_OK: i32 = 0;
/// Exit code: the run failed (source, target, engine, state or internal error).
pub const EXIT_RUN_FAILED: i32 = 1;
/// Exit code: invalid config or command line.
pub const EXIT_INVALID: i32 = 2;
/// Exit code: a dataset check failed; the target was not committed.
pub const EXIT_CHECK_FAILED: i32 = 3;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use crate::invalid::InvalidValue;

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Problems in what the user wrote, all of them.
    #[error("{0}")]
    Config(Diagnostics),
    /// A bad command line (unknown job, missing project).
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// A source could not be read.
    #[error("source `{source_name}` ({path}): {message}")]
    Source {
        /// Source name in the job.
        source_name: String,
        /// Path as written in the job (template, never the resolved secret).
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A database could not be reached or dropped the connection, or refused a statement.
    #[error("connection `{connection}`: {message}")]
    Connection {
        /// Connection name in `sluice.toml`.
        connection: String,
        /// What went wrong, secrets redacted.
        message: String,
        /// True when the same run may succeed later (network, server restart, serialization
        /// failure); a job's `[retry]` policy retries only these.
        transient: bool,
    },
    /// Writing or publishing the target failed; the previous published state is intact.
    #[error("target {path}: {message}")]
    Target {
        /// Target folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The state folder could not be used.
    #[error("state {path}: {message}")]
    State {
        /// File or folder involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// DataFusion failed while running the plan (a source value it could not read, say).
    #[error("while executing the plan of job `{job}`: {message}")]
    Engine {
        /// Job name.
        job: String,
        /// DataFusion's message, secrets redacted.
        message: String,
    },
    /// A violated invariant: a bug in Sluice. Please report it.
    #[error("internal error (a bug in Sluice, please report it): {0}")]
    Internal(String),
}

impl Error {
    /// A source error.
    pub fn source(name: &str, path: &str, message: impl Into<String>) -> Error {
        Error::Source {
            source_name: name.to_string(),
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// An engine error from DataFusion while running `job`'s plan, secrets redacted.
    pub fn engine(
        job: &str,
        redactor: &crate::config::interpolate::Redactor,
        e: &datafusion::error::DataFusionError,
    ) -> Error {
        // A database source's error keeps its class (and whether a retry may cure it).
        if let Some(inner) = wrapped(e) {
            return inner;
        }
        // Errors of Sluice's own sources (the CSV reader) arrive wrapped as "External error".
        let text = e.strip_backtrace();
        let text = text.strip_prefix("External error: ").unwrap_or(&text);
        // A worker task of DataFusion's that panicked (a reader meeting a corrupt page, say)
        // arrives as a bare "Join Error": say what it means.
        let message = if matches!(
            e.find_root(),
            datafusion::error::DataFusionError::ExecutionJoin(_)
        ) {
            format!("a worker reading or computing rows stopped with an internal error ({text}); a source file may be damaged; nothing was committed")
        } else {
            out_of_memory(e).unwrap_or_else(|| text.to_string())
        };
        Error::Engine {
            job: job.to_string(),
            message: redactor.redact(&message),
        }
    }

    /// A target error.
    pub fn target(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::Target {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A state error.
    pub fn state(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::State {
            path: path.into(),
            message: message.into(),
        }
    }

    /// True for an error a retry may cure (see [`Error::Connection`]).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connection {
                transient: true,
                ..
            }
        )
    }

    /// One config diagnostic as an error.
    pub fn config(d: Diagnostic) -> Error {
        Error::Config(Diagnostics(vec![d]))
    }

    /// The documented exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Usage { .. } => EXIT_INVALID,
            _ => EXIT_RUN_FAILED,
        }
    }

    /// Short class name for reports (`config`, `source`, ...).
    pub fn class(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Usage { .. } => "usage",
            Error::Source { .. } => "source",
            Error::Connection { .. } => "connection",
            Error::Target { .. } => "target",
            Error::State { .. } => "state",
            Error::Engine { .. } => "engine",
            Error::Internal(_) => "internal",
        }
    }
}

/// When `e` is DataFusion's memory pool refusing an allocation (the run reached its
/// `memory_limit`, and what asked for more could not spill to disk, or spilling did not free
/// enough), the message a user acts on: what happened, DataFusion's list of the largest
/// consumers, and what to change. `None` for any other error.
pub fn out_of_memory(e: &datafusion::error::DataFusionError) -> Option<String> {
    if !matches!(
        e.find_root(),
        datafusion::error::DataFusionError::ResourcesExhausted(_)
    ) {
        return None;
    }
    Some(format!(
        "the run needs more memory than its `memory_limit` allows, and what asked for more could not spill to disk ({}); nothing was committed. Raise `memory_limit` (in the job file, or `[defaults]` in sluice.toml), or lower `[defaults] target_partitions`",
        e.strip_backtrace()
    ))
}

/// DataFusion's error as a user reads it: [`out_of_memory`]'s message when the memory pool
/// refused an allocation, else its own text without a backtrace.
pub fn datafusion_message(e: &datafusion::error::DataFusionError) -> String {
    out_of_memory(e).unwrap_or_else(|| e.strip_backtrace())
}

/// A connection or source error of Sluice's own that DataFusion carried (as an external
/// error, possibly inside context or shared wrappers), rebuilt.
fn wrapped(e: &datafusion::error::DataFusionError) -> Option<Error> {
    use datafusion::error::DataFusionError as D;
    match e {
        D::External(b) => match b.downcast_ref::<Error>()? {
            Error::Connection {
                connection,
                message,
                transient,
            } => Some(Error::Connection {
                connection: connection.clone(),
                message: message.clone(),
                transient: *transient,
            }),
            Error::Source {
                source_name,
                path,
                message,
            } => Some(Error::Source {
                source_name: source_name.clone(),
                path: path.clone(),
                message: message.clone(),
            }),
            _ => None,
        },
        D::Context(_, inner) => wrapped(inner),
        D::Shared(inner) => wrapped(inner),
        _ => None,
    }
}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Error::Config(d)
    }
}
