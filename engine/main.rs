//! `sluice`: the command line. Parses arguments, calls the library, maps errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice::db::ExtractMode;

use clap::{Parser, Subcommand};
use sluice::error::EXIT_RUN_FAILED;

/// The first error writing standard output (a closed pipe is a signal, not an error; a full
/// disk or `/dev/full` is), reported once at the end instead of a panic in `println!`.
static STDOUT_ERROR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Writes to standard output; a failure is kept in [`STDOUT_ERROR`] and later writes are skipped.
fn write_out(args: std::fmt::Arguments) {
    use std::io::Write;
    if STDOUT_ERROR.get().is_some() {
        return;
    }
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        let _ = STDOUT_ERROR.set(e.to_string());
    }
}

/// One line on standard error, redacted; a failed write is ignored (never a panic, whose exit
/// code could make a committed run look failed).
fn errln(text: &str) {
    sluice::logging::stderr_line(text);
}

/// `print!` that never panics (see [`write_out`]).
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_out(format_args!($($arg)*)) };
}

/// `println!` that never panics (see [`write_out`]).
macro_rules! outln {
    () => { $crate::write_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

mod cli;
use cli::*;

/// The exit code once standard output is flushed: a command whose output could not be
/// written failed (exit 1) — except a run, whose exit code says what happened to the target
/// (a committed run must not look failed, or a scheduler would load it again).
fn finish_output(code: i32, runs_a_job: bool) -> i32 {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().flush() {
        let _ = STDOUT_ERROR.set(e.to_string());
    }
    let Some(e) = STDOUT_ERROR.get() else {
        return code;
    };
    errln(&format!("error: cannot write to standard output: {e}"));
    if runs_a_job {
        errln(&format!("   = note: the exit code ({code}) is the run's; its report is in the state folder (runs/JOB/RUN_ID.json)"));
        code
    } else {
        EXIT_RUN_FAILED
    }
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success (dataset checks may have warned)
  1  the run failed (source, connection, target, engine or state error); the target and
     the watermarks are unchanged
  2  invalid configuration or command line
  3  a dataset check failed; the quarantine and report were written, the target is unchanged

Examples:
  sluice validate                  check every file of the project
  sluice plan flights              show schemas, rules and the DataFusion plans of jobs/flights.toml
  sluice run flights               run it; a summary table at the end
  sluice run flights --json        print the run report as JSON (for schedulers)
  sluice run flights_from_postgres incremental: only rows above the last committed watermark
  sluice run JOB --full-refresh    read incremental sources whole
  sluice run JOB --date 2026-11-29 --var region=EU
                                   a run for another logical date (${run.date}), with a var
  sluice backfill JOB --from 2013-06-01 --to 2013-07-01
                                   re-read a range of the cursor (the watermark stays), or
                                   of a job without one, run each date of the range
  sluice quarantine flights        rejected rows of the latest run: counts per rule, samples
  sluice replay flights --run ID   after fixing the mapping, load the rows run ID rejected
  sluice quality flights           per rule and check, the values of the last runs
  sluice test --junit tests.xml    run every mapping's [[test]] blocks on their inline rows

Docs: docs/getting-started.md and docs/reference.md in the project repository.";

/// Sluice: declarative ETL. TOML models, mappings and jobs compiled to Apache DataFusion plans.
#[derive(Parser)]
#[command(name = "sluice", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Project folder (holding sluice.toml). Default: the nearest one at or above the current
    /// folder.
    #[arg(long, global = true, value_name = "DIR")]
    project: Option<PathBuf>,

    /// Log lines on standard error as text, or as JSON objects one per line (with the job and
    /// run id of the run they belong to). `SLUICE_LOG` sets the level.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", env = "SLUICE_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check config files and report every problem at once, with file, line and a hint.
    ///
    /// Without PATHS: every file of the project, and every job compiled against its sources'
    /// schemas. With PATHS: those files (models, mappings, jobs or sluice.toml), and the jobs
    /// that use them, compiled.
    Validate {
        /// Files to check.
        paths: Vec<PathBuf>,
    },
    /// Compile a job and print its resolved schemas, row rules, and the DataFusion logical and
    /// physical plans. Reads only what schema inference needs (CSV: the first
    /// `infer_schema_rows` records).
    Plan {
        /// Job name (file stem in jobs/) or path to the job file.
        job: String,
        #[command(flatten)]
        params: run::ParamArgs,
    },
    /// Run a job: read, map, check, quarantine failing rows, commit the target atomically.
    ///
    /// Incremental database sources read the rows above the watermark the last committed run
    /// left (minus the `lookback`), and the watermark moves only after the target commit. A
    /// run failing for a transient reason (a dropped connection) is retried as the job's
    /// `[retry]` says; the load is all-or-nothing, so a retry never duplicates rows.
    Run {
        /// Job name (file stem in jobs/) or path to the job file.
        job: String,
        /// Print the run report as JSON on standard output instead of the summary table.
        #[arg(long)]
        json: bool,
        /// Ignore the watermarks and read every row of incremental sources; an `append`
        /// target is replaced (as `overwrite`) so no row is loaded twice. The watermark is set
        /// from the rows read.
        #[arg(long)]
        full_refresh: bool,
        #[command(flatten)]
        params: run::ParamArgs,
    },
    /// Re-load a range: of an incremental source's cursor, or of logical dates.
    ///
    /// A job with an incremental source re-reads `FROM <= cursor < TO` in one run and loads it
    /// with the job's mode (use `merge` or `scd2` targets, so re-read rows replace
    /// themselves); the watermark does not move. Bounds are written as the cursor's type:
    /// `2013-06-01`, `2013-06-01T05:00:00Z` or `2013-06-01 05:00:00` for time cursors, a
    /// number for integer cursors.
    ///
    /// Any other job is backfilled by date: one run per day `FROM <= date < TO`, in order,
    /// each with that day as its logical date (`${run.date}` in its paths and expressions).
    /// Its target must give each date its own output (`path = "out/x/date=${run.date}"` with
    /// `overwrite`, or `merge`), so re-running a date replaces it. Interrupted (a failed date,
    /// Ctrl-C, a crash), the same command resumes at the first date not committed.
    Backfill {
        /// Job name (file stem in jobs/) or path to the job file.
        job: String,
        /// Inclusive lower bound.
        #[arg(long, value_name = "FROM")]
        from: String,
        /// Exclusive upper bound.
        #[arg(long, value_name = "TO")]
        to: String,
        /// Print the run report as JSON (a date backfill: one report per line).
        #[arg(long)]
        json: bool,
        /// A date backfill: run every date again, not only those an interrupted run of the
        /// same backfill left.
        #[arg(long)]
        restart: bool,
        /// A value for one of the job's `[vars]`, for every run of the backfill (repeatable).
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = sluice::config::params::parse_var)]
        vars: Vec<(String, String)>,
    },
    /// Run every job that has a `schedule`, at its fire times, until stopped (SIGTERM or
    /// Ctrl-C).
    ///
    /// A job is scheduled with a cron expression read in its time zone, so daylight-saving
    /// changes neither skip nor double a run:
    ///
    ///   schedule = { cron = "0 2 * * *", timezone = "Europe/London" }
    ///
    /// Runs of one job never overlap; fires missed while the daemon was down run once at
    /// start (`misfire = "run_once"`, the default) or are skipped (`misfire = "skip"`). Each
    /// run reloads the job's files; one log line per fire and per run goes to standard error.
    /// On SIGTERM no new run starts and running ones get --grace to finish, then are aborted
    /// with their targets untouched.
    ///
    /// A job whose fires fail `pause_after_failures` times in a row (default 3) is paused
    /// until `sluice resume JOB`. With `[server]` in sluice.toml (or --listen) the daemon
    /// serves /health, /metrics (Prometheus), /openapi.json and the API; with `[alerts]` it
    /// POSTs failures to a webhook. docs/operations.md has the details.
    Schedule {
        /// How long running runs may take to finish after SIGTERM or Ctrl-C.
        #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = sluice::config::parse_duration)]
        grace: std::time::Duration,
        /// Serve HTTP on this address (such as 127.0.0.1:8080), overriding [server] listen.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Run the fires of a job the daemon paused after failures in a row again.
    ///
    /// Works with the daemon running or not: the pause is kept in the state store.
    Resume {
        /// Job name.
        job: String,
    },
    /// Delete run reports, quarantined rows and history older than `[retention]` in
    /// sluice.toml says (each job's latest run and latest committed run are kept).
    ///
    /// The daemon does this at start and every hour.
    Prune {
        /// Count what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// API tokens for the daemon's HTTP server.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Every job: owner, schedule, last run with its result, duration and rows, next run.
    ///
    /// The project's inventory of loads, read from the job files and the state store.
    Status {
        /// Print JSON (one object per job, with its description) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The run history, newest first: status, start, duration and rows of each run.
    Runs {
        /// Only this job's runs (a name or a job file's path).
        job: Option<String>,
        /// Runs to show.
        #[arg(long, default_value_t = 20, value_name = "N")]
        last: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a job's quarantine: rows per run, rows per failed rule, and sample rows with their
    /// file, line and reasons.
    Quarantine {
        /// Job name (file stem in jobs/) or path to the job file.
        job: String,
        /// The run to show rules and samples of (default: the latest run with rejected rows).
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
        /// Sample rows to show.
        #[arg(long, default_value_t = 10, value_name = "N")]
        samples: usize,
    },
    /// Reprocess one run's quarantined rows through the current mapping (after a fix) and
    /// append the rows that now pass to the target. Rows that still fail go to the replay
    /// run's own quarantine. A run can be replayed once, so no row is loaded twice.
    Replay {
        /// Job name (file stem in jobs/) or path to the job file.
        job: String,
        /// The run whose quarantined rows to reprocess (see `sluice quarantine JOB`).
        #[arg(long, value_name = "RUN_ID")]
        run: String,
        /// Print the run report as JSON on standard output instead of the summary table.
        #[arg(long)]
        json: bool,
    },
    /// Show a job's quality history: per row rule the rows failed in each of the last runs,
    /// per dataset check the measured value, and the latest status. Read from the state store
    /// (`.sluice/state.db`, SQLite), which every run appends to.
    Quality {
        /// Job name (file stem in jobs/) or path to the job file.
        job: String,
        /// Runs to show.
        #[arg(long, default_value_t = 7, value_name = "N")]
        last: usize,
    },
    /// Run the `[[test]]` blocks of mappings on their inline rows, in process (no file is read
    /// or written). Prints each test and what differed; exit 1 when a test fails.
    Test {
        /// Mapping names (file stems in mappings/); default: every mapping.
        mappings: Vec<String>,
        /// Also write the results as JUnit XML to this file (for CI).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Canonical models as contracts.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Read a token on standard input and print the SHA-256 to put in
    /// `[server.tokens.<name>] sha256` (the token itself never goes into a file):
    ///
    ///   openssl rand -hex 32 > token.txt; sluice token hash < token.txt
    Hash,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Compare two versions of a model file and classify each change as breaking or additive
    /// (Avro / Schema Registry full-compatibility rules); print the version the change needs.
    ///
    /// Exit code 0 when NEW's version is right for the changes, 2 when it is not (a breaking
    /// change without a major bump, say).
    ///
    /// Example: git show HEAD~1:mappings/canonical/flight.toml > /tmp/old.toml &&
    ///          sluice model diff /tmp/old.toml mappings/canonical/flight.toml
    Diff {
        /// The older model file.
        old: PathBuf,
        /// The newer model file.
        new: PathBuf,
        /// Print the changes as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // Behave like other Unix tools when stdout is closed early (`sluice plan x | head`): exit
    // quietly instead of panicking on a broken pipe.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // Logs and panic messages go to standard error redacted (they may quote a resolved path).
    let format = if cli.log_format == "json" {
        sluice::logging::LogFormat::Json
    } else {
        sluice::logging::LogFormat::Text
    };
    // The daemon logs each fire and run at `info`; other commands only warnings.
    let default_level = match cli.command {
        Command::Schedule { .. } => "warn,sluice::daemon=info",
        _ => "warn",
    };
    sluice::logging::init(format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            errln(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_RUN_FAILED as u8);
        }
    };
    let runs_a_job = matches!(
        cli.command,
        Command::Run { .. } | Command::Backfill { .. } | Command::Replay { .. }
    );
    // A panic is a failed run, never a success: the runtime reports it as exit 1 (the panic
    // message, with its location, is on standard error), not as Rust's exit 101.
    let code = runtime.block_on(async {
        use futures::FutureExt;
        std::panic::AssertUnwindSafe(dispatch(cli))
            .catch_unwind()
            .await
            .unwrap_or_else(|p| {
                errln(&format!(
                    "error: internal error (a bug in Sluice): {}",
                    sluice::producer::panic_message(p.as_ref())
                ));
                EXIT_RUN_FAILED
            })
    });
    ExitCode::from(finish_output(code, runs_a_job) as u8)
}

async fn dispatch(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Validate { paths } => validate::validate(cli.project.as_deref(), &paths).await,
        Command::Plan { job, params } => plan::plan(cli.project.as_deref(), &job, &params).await,
        Command::Run {
            job,
            json,
            full_refresh,
            params,
        } => {
            let mode = if full_refresh {
                ExtractMode::FullRefresh
            } else {
                ExtractMode::Incremental
            };
            run::run(cli.project.as_deref(), &job, json, mode, &params).await
        }
        Command::Backfill {
            job,
            from,
            to,
            json,
            restart,
            vars,
        } => {
            let range = run::Range { from, to, restart };
            run::backfill(cli.project.as_deref(), &job, json, range, vars).await
        }
        Command::Schedule { grace, listen } => {
            schedule::schedule(cli.project.as_deref(), grace, listen).await
        }
        Command::Resume { job } => schedule::resume(cli.project.as_deref(), &job),
        Command::Prune { dry_run } => schedule::prune(cli.project.as_deref(), dry_run).await,
        Command::Token {
            command: TokenCommand::Hash,
        } => schedule::token_hash(),
        Command::Status { json } => status::status(cli.project.as_deref(), json),
        Command::Runs { job, last, json } => {
            status::runs(cli.project.as_deref(), job.as_deref(), last, json)
        }
        Command::Quarantine { job, run, samples } => {
            quarantine::quarantine(cli.project.as_deref(), &job, run.as_deref(), samples).await
        }
        Command::Replay { job, run, json } => {
            run::replay(cli.project.as_deref(), &job, &run, json).await
        }
        Command::Test { mappings, junit } => {
            test::test(cli.project.as_deref(), &mappings, junit.as_deref()).await
        }
        Command::Quality { job, last } => quality::quality(cli.project.as_deref(), &job, last),
        Command::Model {
            command: ModelCommand::Diff { old, new, json },
        } => model::model_diff(&old, &new, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report_error(&e);
            e.exit_code()
        }
    }
}
