//! `sluice`: the command line. Parses arguments, calls the library, maps errors to exit codes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use sluice::config::spec::LoadMode;
use sluice::db::ExtractMode;

use clap::{Parser, Subcommand};
use sluice::config::{file_kind, load_file, read_source, Project};
use sluice::diagnostic::{Diagnostic, Diagnostics};
use sluice::error::{Error, EXIT_INVALID, EXIT_OK, EXIT_RUN_FAILED};
use sluice::run::{NoProgress, Progress, RunReport, TerminalProgress};

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
    ($($arg:tt)*) => { write_out(format_args!($($arg)*)) };
}

/// `println!` that never panics (see [`write_out`]).
macro_rules! outln {
    () => { write_out(format_args!("\n")) };
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

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
  sluice backfill JOB --from 2013-06-01 --to 2013-07-01
                                   re-read a range of the cursor; the watermark stays
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
    },
    /// Re-read a range of an incremental source's cursor (`FROM <= cursor < TO`) and load it
    /// with the job's mode (use `merge` or `scd2` targets, so re-read rows replace
    /// themselves). The watermark does not move.
    ///
    /// Bounds are written as the cursor's type: `2013-06-01`, `2013-06-01T05:00:00Z` or
    /// `2013-06-01 05:00:00` for time cursors, a number for integer cursors.
    Backfill {
        /// Job name (file stem in jobs/) or path to the job file.
        job: String,
        /// Inclusive lower bound.
        #[arg(long, value_name = "FROM")]
        from: String,
        /// Exclusive upper bound.
        #[arg(long, value_name = "TO")]
        to: String,
        /// Print the run report as JSON.
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
    sluice::logging::init();
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
        Command::Validate { paths } => validate(cli.project.as_deref(), &paths).await,
        Command::Plan { job } => plan(cli.project.as_deref(), &job).await,
        Command::Run {
            job,
            json,
            full_refresh,
        } => {
            let mode = if full_refresh {
                ExtractMode::FullRefresh
            } else {
                ExtractMode::Incremental
            };
            run(cli.project.as_deref(), &job, json, mode).await
        }
        Command::Backfill {
            job,
            from,
            to,
            json,
        } => {
            run(
                cli.project.as_deref(),
                &job,
                json,
                ExtractMode::Backfill { from, to },
            )
            .await
        }
        Command::Quarantine { job, run, samples } => {
            quarantine(cli.project.as_deref(), &job, run.as_deref(), samples).await
        }
        Command::Replay { job, run, json } => {
            replay(cli.project.as_deref(), &job, &run, json).await
        }
        Command::Test { mappings, junit } => {
            test(cli.project.as_deref(), &mappings, junit.as_deref()).await
        }
        Command::Quality { job, last } => quality(cli.project.as_deref(), &job, last),
        Command::Model {
            command: ModelCommand::Diff { old, new, json },
        } => model_diff(&old, &new, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report_error(&e);
            e.exit_code()
        }
    }
}

/// Prints `e` on standard error, with every secret the process resolved redacted (see
/// [`errln`]).
fn report_error(e: &Error) {
    let text = match e {
        Error::Config(d) => d.to_string(),
        Error::Usage { message, hint } => match hint {
            Some(h) => format!("error: {message}\n   = hint: {h}"),
            None => format!("error: {message}"),
        },
        other => format!("error: {other}"),
    };
    errln(&text);
}

fn project_root(explicit: Option<&Path>, near: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = explicit {
        if p.join(sluice::config::PROJECT_FILE).is_file() {
            return Ok(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
        }
        return Err(Error::Usage {
            message: format!("{} has no sluice.toml", p.display()),
            hint: Some("pass the folder that holds sluice.toml to --project".into()),
        });
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let start = near.map(Path::to_path_buf).unwrap_or(cwd);
    Project::find_root(&start).ok_or_else(|| Error::Usage {
        message: format!(
            "no sluice.toml in {} or any folder above it",
            start.display()
        ),
        hint: Some("run sluice inside a project, or pass --project DIR".into()),
    })
}

fn load(root: &Path) -> Result<Project, Error> {
    Project::load(root).map_err(Error::Config)
}

/// Loads the project to run `job`; problems only in files the job does not use are printed
/// as warnings (see [`Project::load_for_job`]).
fn load_for_job(root: &Path, job: &str) -> Result<Project, Error> {
    let (project, others) = Project::load_for_job(root, job).map_err(Error::Config)?;
    if !others.is_empty() {
        errln(&format!(
            "warning: files that job `{job}` does not use have problems; running it anyway:\n{}",
            others.to_string().trim_end()
        ));
    }
    Ok(project)
}

/// Compiles the jobs `wanted` selects whose own files loaded, against their sources' schemas,
/// and returns the problems found (expression errors, unknown fields in rules, ...).
async fn compile_jobs(
    project: &Project,
    wanted: impl Fn(&sluice::config::Job) -> bool,
) -> Diagnostics {
    let mut diags = Diagnostics::default();
    for job in project.jobs.values().filter(|j| wanted(j)) {
        let Some(mapping) = project.mappings.get(&job.mapping) else {
            continue;
        };
        if !project.models.contains_key(&mapping.model.name)
            || !mapping
                .source_names()
                .iter()
                .all(|s| job.sources.contains_key(*s))
        {
            continue;
        }
        match sluice::plan::compile(project, job).await {
            Ok(_) => {}
            Err(Error::Config(d)) => diags.extend(d),
            Err(Error::Source {
                source_name,
                path,
                message,
            }) => {
                let spec = job.sources.get(&source_name);
                let database = spec.is_some_and(|s| s.is_database());
                let span = spec.and_then(|s| {
                    s.path
                        .as_ref()
                        .map(|p| p.span())
                        .or_else(|| s.table.as_ref().map(|t| t.span()))
                        .or_else(|| s.query.as_ref().map(|q| q.span()))
                });
                let key = if database { "table" } else { "path" };
                let mut d = job.src.diagnostic(
                    span,
                    format!("sources.{source_name}.{key}"),
                    format!("source `{source_name}` ({path}): {message}"),
                );
                d.hint = Some(if database {
                    "check the table or query, and the type table in docs/reference.md".into()
                } else {
                    "check the path and that the files are in place".into()
                });
                diags.push(d);
            }
            // A database that cannot be reached says nothing about the files: warn, and
            // check the rest.
            Err(e @ Error::Connection { .. }) => errln(&format!(
                "warning: job `{}` was checked without its database, which could not be reached: {e}",
                job.name
            )),
            Err(e) => diags.push(Diagnostic::file_level(job.src.path.clone(), e.to_string())),
        }
    }
    diags
}

async fn validate(explicit: Option<&Path>, paths: &[PathBuf]) -> Result<i32, Error> {
    let mut diags = Diagnostics::default();
    if paths.is_empty() {
        let root = project_root(explicit, None)?;
        let (project, problems) = Project::load_partial(&root);
        diags.extend(problems);
        // Models as contracts: an edit must be versioned against what runs have loaded.
        for model in project.models.values() {
            if let Some(d) = sluice::contract::check_registered(&project, model) {
                diags.push(d);
            }
        }
        // Compile every job whose own files loaded, so expression errors show up even while
        // other files still have problems.
        diags.extend(compile_jobs(&project, |_| true).await);
        if diags.is_empty() {
            outln!(
                "ok: {} model(s), {} mapping(s), {} job(s) valid",
                project.models.len(),
                project.mappings.len(),
                project.jobs.len()
            );
            return Ok(EXIT_OK);
        }
    } else {
        let root = project_root(explicit, paths.first().map(PathBuf::as_path)).ok();
        for p in paths {
            let base = root.clone().unwrap_or_else(|| PathBuf::from("."));
            let Some(src) = read_source(&base, p, &mut diags) else {
                continue;
            };
            match file_kind(&base, p, &src.text) {
                Some(kind) => load_file(kind, &src, &mut diags),
                None => diags.push(
                    Diagnostic::file_level(
                        src.path.clone(),
                        "cannot tell what kind of Sluice file this is",
                    )
                    .with_hint(
                        "models live in mappings/canonical/, mappings in mappings/, jobs in jobs/",
                    ),
                ),
            }
        }
        // Cross-file problems of these files (a missing mapping, say), when the files themselves
        // are fine; then the jobs that use them, compiled.
        if diags.is_empty() {
            if let Some(root) = &root {
                let wanted: Vec<PathBuf> = paths
                    .iter()
                    .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
                    .collect();
                if let Ok(project) = Project::load(root) {
                    let uses = |file: &Path| {
                        let abs = std::fs::canonicalize(root.join(file))
                            .unwrap_or_else(|_| file.to_path_buf());
                        wanted.contains(&abs)
                    };
                    diags.extend(
                        compile_jobs(&project, |j| {
                            let mapping = project.mappings.get(&j.mapping);
                            let model = mapping.and_then(|m| project.models.get(&m.model.name));
                            uses(&j.src.path)
                                || mapping.is_some_and(|m| uses(&m.src.path))
                                || model.is_some_and(|m| uses(&m.file))
                        })
                        .await,
                    );
                }
                if let Err(all) = Project::load(root) {
                    let wanted: Vec<PathBuf> = paths
                        .iter()
                        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
                        .collect();
                    for d in all.0 {
                        let abs = std::fs::canonicalize(root.join(&d.file))
                            .unwrap_or_else(|_| d.file.clone());
                        if wanted.contains(&abs) {
                            diags.push(d);
                        }
                    }
                }
            }
        }
        if diags.is_empty() {
            outln!("ok: {} file(s) valid", paths.len());
            return Ok(EXIT_OK);
        }
    }
    errln(&diags.to_string());
    Ok(EXIT_INVALID)
}

async fn plan(explicit: Option<&Path>, job: &str) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let compiled = sluice::plan::compile(&project, job).await?;
    out!(
        "{}",
        sluice::plan::describe(&compiled, &project.root).await?
    );
    Ok(EXIT_OK)
}

async fn quarantine(
    explicit: Option<&Path>,
    job: &str,
    run: Option<&str>,
    samples: usize,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let redactor = sluice::config::interpolate::Redactor::default();
    let dir = sluice::plan::quarantine_dir(&project, job, &redactor)?;
    let summary = sluice::inspect::quarantine_summary(&job.name, &dir, run, samples).await?;
    let text = summary
        .text
        .replace(&format!("{}/", project.root.display()), "");
    out!("{}", redactor.redact(&text));
    Ok(EXIT_OK)
}

async fn test(
    explicit: Option<&Path>,
    mappings: &[String],
    junit: Option<&Path>,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load(&root)?;
    let outcomes = sluice::mapping_test::run_tests(&project, mappings).await?;
    for o in &outcomes {
        let ms = o.duration.as_secs_f64() * 1000.0;
        if o.passed() {
            outln!("ok    {} › {} ({ms:.0} ms)", o.mapping, o.name);
        } else {
            outln!("FAIL  {} › {} ({ms:.0} ms)", o.mapping, o.name);
            for f in &o.failures {
                outln!("      {f}");
            }
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    if outcomes.is_empty() {
        outln!("no [[test]] blocks found; see docs/reference.md#mapping-tests");
    } else {
        outln!(
            "\n{} test(s): {} passed, {failed} failed",
            outcomes.len(),
            outcomes.len() - failed
        );
    }
    if let Some(path) = junit {
        std::fs::write(path, sluice::mapping_test::junit_xml(&outcomes)).map_err(|e| {
            Error::Usage {
                message: format!("cannot write {}: {e}", path.display()),
                hint: None,
            }
        })?;
    }
    Ok(if failed == 0 {
        EXIT_OK
    } else {
        EXIT_RUN_FAILED
    })
}

fn quality(explicit: Option<&Path>, job: &str, last: usize) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let store = sluice::state::StateStore::open(&project.path(&project.settings.state_dir))?;
    out!(
        "{}",
        sluice::inspect::quality_trend(&store, &job.name, last)?
    );
    Ok(EXIT_OK)
}

fn model_diff(old: &Path, new: &Path, json: bool) -> Result<i32, Error> {
    let read = |p: &Path| -> Result<sluice::model::CanonicalModel, Error> {
        let text = std::fs::read_to_string(p).map_err(|e| Error::Usage {
            message: format!("cannot read {}: {e}", p.display()),
            hint: None,
        })?;
        sluice::config::parse_model(&sluice::diagnostic::SourceText::new(p, text))
            .map_err(Error::Config)
    };
    let diff = sluice::contract::diff(&read(old)?, &read(new)?);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&diff).map_err(|e| Error::Internal(e.to_string()))?
        );
    } else {
        outln!("{}", diff.to_string().trim_end());
    }
    Ok(match diff.check_version() {
        Ok(()) => EXIT_OK,
        Err(e) => {
            if json {
                errln(&format!("error: {e}"));
            }
            EXIT_INVALID
        }
    })
}

async fn run(
    explicit: Option<&Path>,
    job: &str,
    json: bool,
    mode: ExtractMode,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let mut job = project.job(job).map_err(|d| Error::config(*d))?.clone();
    match (&mode, job.target.mode) {
        (ExtractMode::FullRefresh, LoadMode::Append) => {
            errln("note: --full-refresh replaces the target (overwrite) instead of appending, so no row is loaded twice");
            job.target.mode = LoadMode::Overwrite;
        }
        (ExtractMode::Backfill { .. }, LoadMode::Overwrite) => {
            return Err(Error::Usage {
                message: format!(
                    "job `{}` overwrites its target, so a backfill would replace the table with only the range read",
                    job.name
                ),
                hint: Some("backfill jobs with `mode = \"merge\"` or `\"scd2\"`; to reload everything use `sluice run --full-refresh`".into()),
            });
        }
        (ExtractMode::Backfill { .. }, LoadMode::Append) => {
            errln(&format!("warning: job `{}` appends, so rows of the range that were loaded before are loaded again; prefer `mode = \"merge\"`", job.name));
        }
        _ => {}
    }
    // One run of a job at a time (each attempt first records a commit an earlier run made
    // but did not record, before anything reads the state store).
    let _job_lock = sluice::commit::lock_job(&project, &job)?;
    let retry = &job.retry;
    let duration = |d: &str| sluice::config::parse_duration(d).unwrap_or(Duration::from_secs(1));
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(duration(retry.backoff.get_ref()))
        .with_max_delay(duration(retry.max_backoff.get_ref()))
        .with_jitter()
        .with_max_times(retry.attempts.saturating_sub(1) as usize)
        .build();
    let mut attempt = 1;
    loop {
        let report = run_once(&project, &job, json, &mode).await?;
        let Some(report) = report else {
            // A config error (already reported): no run happened.
            return Ok(2);
        };
        let transient = report.error.as_ref().is_some_and(|e| e.transient);
        if transient {
            if let Some(delay) = delays.next() {
                errln(&format!(
                    "attempt {attempt} of {} failed for a reason that may pass (above); nothing was committed; retrying in {:.1} s",
                    retry.attempts,
                    delay.as_secs_f64()
                ));
                tokio::time::sleep(delay).await;
                attempt += 1;
                continue;
            }
        }
        return Ok(report.exit_code());
    }
}

/// One attempt of a run: compile, run, print. `None` when the config is invalid.
async fn run_once(
    project: &Project,
    job: &sluice::config::Job,
    json: bool,
    mode: &ExtractMode,
) -> Result<Option<RunReport>, Error> {
    let started = chrono::Utc::now();
    let t0 = Instant::now();
    let no_inputs = HashMap::new();
    let compiling = async {
        sluice::commit::reconcile(project, job).await?;
        // Models as contracts, checked against every version committed runs loaded (a run
        // recovered just now included).
        if let Some(model) = project
            .mappings
            .get(&job.mapping)
            .and_then(|m| project.models.get(&m.model.name))
        {
            if let Some(d) = sluice::contract::check_registered(project, model) {
                return Err(Error::config(d));
            }
        }
        sluice::plan::compile_for(project, job, &no_inputs, mode).await
    };
    let compiled = match sluice::producer::catch_panic(compiling, "planning the job").await {
        Ok(c) => c,
        Err(e @ Error::Config(_)) => {
            report_error(&e);
            return Ok(None);
        }
        Err(e) => {
            let redactor = sluice::config::interpolate::Redactor::process().clone();
            let report = sluice::run::failed_before_start(project, job, started, &e, &redactor)?;
            if json {
                print_json(&report)?;
            } else {
                report_error(&e);
            }
            return Ok(Some(report));
        }
    };
    let mut terminal = if json { None } else { TerminalProgress::new() };
    let mut quiet = NoProgress;
    let progress: &mut dyn Progress = match terminal.as_mut() {
        Some(t) => t,
        None => &mut quiet,
    };
    let report = sluice::run::run(project, compiled, started, t0.elapsed(), progress).await?;
    if json {
        print_json(&report)?;
    } else {
        print_summary(&report, project);
    }
    Ok(Some(report))
}

async fn replay(
    explicit: Option<&Path>,
    job: &str,
    run_id: &str,
    json: bool,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let _job_lock = sluice::commit::lock_job(&project, job)?;
    sluice::commit::reconcile(&project, job).await?;
    let mut terminal = if json { None } else { TerminalProgress::new() };
    let mut quiet = NoProgress;
    let progress: &mut dyn Progress = match terminal.as_mut() {
        Some(t) => t,
        None => &mut quiet,
    };
    let report = sluice::replay::replay(&project, job, run_id, progress).await?;
    if json {
        print_json(&report)?;
    } else {
        outln!("replay of run {run_id}: rows that now pass are appended to the target");
        print_summary(&report, &project);
    }
    Ok(report.exit_code())
}

fn print_json(report: &RunReport) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(report).map_err(|e| Error::Internal(e.to_string()))?;
    outln!("{s}");
    Ok(())
}

fn print_summary(r: &RunReport, project: &Project) {
    use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
    outln!(
        "run {}  job {}  model {} {}  status {}",
        r.run_id,
        r.job,
        r.model,
        r.model_version,
        serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    );
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    let mut header = vec!["rows read", "written", "quarantined"];
    let mut row = vec![
        r.rows.read.to_string(),
        r.rows.written.to_string(),
        r.rows.quarantined.to_string(),
    ];
    // Drop and flag actions only show when a rule used them.
    if r.rows.dropped > 0 {
        header.push("dropped");
        row.push(r.rows.dropped.to_string());
    }
    if r.rows.flagged > 0 {
        header.push("flagged");
        row.push(r.rows.flagged.to_string());
    }
    if let Some(l) = &r.load {
        for (name, n) in [
            ("inserted", l.inserted),
            ("updated", l.updated),
            ("deleted", l.deleted),
        ] {
            header.push(name);
            row.push(n.to_string());
        }
    }
    header.push("duration");
    row.push(format!("{:.2} s", r.duration_ms as f64 / 1000.0));
    t.set_header(header);
    t.add_row(row);
    outln!("{t}");
    for w in &r.watermarks {
        outln!(
            "source {}: read {}; watermark {} {}",
            w.source,
            w.range,
            if w.moved { "moved to" } else { "stays at" },
            w.value.as_deref().unwrap_or("(none)")
        );
    }
    if r.error.is_none() {
        if r.rows.produced > r.rows.read {
            outln!(
                "warning: joins produced {} rows from {} source rows: a join key matched more than one row; check that lookup keys are unique",
                r.rows.produced, r.rows.read
            );
        } else if r.rows.produced < r.rows.read {
            outln!(
                "warning: inner joins dropped {} of {} source rows (they are neither loaded nor quarantined); use `type = \"left\"` and a rule to quarantine them instead",
                r.rows.read - r.rows.produced,
                r.rows.read
            );
        }
    }
    let failing: Vec<_> = r.rules.iter().filter(|x| x.failed_rows > 0).collect();
    if !failing.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header(vec!["rule", "rows failed", "example reason"]);
        for x in failing {
            t.add_row(vec![
                x.rule.clone(),
                x.failed_rows.to_string(),
                x.samples.first().cloned().unwrap_or_default(),
            ]);
        }
        outln!("{t}");
    }
    if !r.checks.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header(vec!["check", "status", "detail"]);
        for c in &r.checks {
            t.add_row(vec![
                c.check.clone(),
                c.status.to_string(),
                c.message.clone(),
            ]);
        }
        outln!("{t}");
    }
    for o in &r.outputs {
        outln!(
            "{:<10} {}  {} row{}{}",
            o.kind,
            o.path,
            o.rows,
            if o.rows == 1 { "" } else { "s" },
            if o.committed { "" } else { "  (not committed)" }
        );
    }
    if let Some(e) = &r.error {
        errln(&format!("error ({}): {}", e.class, e.message));
    }
    let report = sluice::run::report_path(project, &r.job, &r.run_id);
    outln!(
        "report     {}",
        report
            .strip_prefix(&project.root)
            .unwrap_or(&report)
            .display()
    );
}
