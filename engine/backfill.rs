//! Date backfills: `sluice backfill JOB --from D1 --to D2` for a job without an incremental
//! source runs the job once per logical date `D1 <= date < D2`, in order. Each date's run is
//! an ordinary run (all-or-nothing, retried as the job's `[retry]` says) with that date as its
//! logical date, so `${run.date}` in its paths and expressions picks the day's files and
//! output. The state store keeps how far the backfill got ([`crate::state::StateStore::backfill_done_through`]):
//! the same command after an interruption resumes at the first date not committed.
//!
//! Re-running a date must replace that date's output, never add to it, so the target is
//! checked first:
//!
//! | target                                   | date backfill |
//! |------------------------------------------|---------------|
//! | `overwrite`, `path` with `${run.*}`      | each date replaces its own folder |
//! | `merge`                                  | each date's rows replace themselves by key |
//! | `scd2`                                   | refused: versions are stamped with the run's clock, so old dates would become current |
//! | `overwrite` of one table or folder       | refused: each date would replace the previous ones |
//! | `append`                                 | refused: re-running a date would load its rows twice |
//!
//! Crash points: a run killed before its commit leaves the target as it was and the date
//! not done; killed after its commit but before the progress is recorded, the resumed backfill
//! runs that date again, which replaces its own output (the table above), so no row is loaded
//! twice.

use chrono::{DateTime, NaiveDate, Utc};

use crate::config::params::{self, uses_logical_date};
use crate::config::spec::LoadMode;
use crate::config::{Job, Project};
use crate::error::{Error, Result};
use crate::state::StateStore;

/// The dates a date backfill still has to run.
#[derive(Debug, Clone, PartialEq)]
pub struct DatePlan {
    /// First date asked for (inclusive).
    pub from: NaiveDate,
    /// Last date asked for (exclusive).
    pub to: NaiveDate,
    /// The dates to run, in order.
    pub dates: Vec<NaiveDate>,
    /// The last date an earlier, interrupted run of this backfill committed.
    pub resumed_after: Option<NaiveDate>,
    /// The vars given, as JSON: the same range with other vars is another backfill.
    pub vars: String,
}

/// True when `job` is backfilled by date (no source has an incremental cursor); a job with an
/// incremental database source is backfilled by its cursor range instead. (An incremental file
/// source reads its new files in a date backfill as in any run.)
pub fn is_by_date(job: &Job) -> bool {
    job.sources.values().all(|s| s.cursor().is_none())
}

/// Plans the date backfill of `job` over `from..to` (`YYYY-MM-DD` each) with `vars`: checks
/// that the job depends on its logical date and that re-running a date replaces its output,
/// and skips the dates an earlier run of the same backfill (same range and vars) committed
/// (all of them again with `restart`).
///
/// # Errors
/// [`Error::Usage`] for bad dates, a job that does not use `${run.*}`, or a target that a
/// date backfill would double or replace (see the module's table); [`Error::State`] when the
/// state store cannot be read.
pub fn plan(
    project: &Project,
    job: &Job,
    range: (&str, &str),
    vars: &std::collections::BTreeMap<String, String>,
    restart: bool,
) -> Result<DatePlan> {
    let (from, to) = range;
    let vars = serde_json::to_string(vars).unwrap_or_default();
    let (from, to) = (day(from)?, day(to)?);
    if from >= to {
        return Err(usage(
            format!("--from {from} is not before --to {to}"),
            "the range is FROM <= date < TO: `--from 2026-11-01 --to 2026-11-08` runs 7 dates",
        ));
    }
    if !uses_logical_date(project, job) {
        return Err(usage(
            format!("job `{}` uses no `${{run.*}}` reference, so every date would read and write the same", job.name),
            "use `${run.date}` in a source path (and the target path) to pick each day's data, or run it once with `sluice run`",
        ));
    }
    check_target(job)?;
    let store = StateStore::of(project)?;
    if restart {
        store.backfill_forget(&job.name, &vars, from, to)?;
    }
    let resumed_after = store.backfill_done_through(&job.name, &vars, from, to)?;
    let dates = from
        .iter_days()
        .take_while(|d| *d < to)
        .filter(|d| resumed_after.is_none_or(|done| *d > done))
        .collect();
    store.backfill_progress(&job.name, &vars, from, to, resumed_after)?;
    Ok(DatePlan {
        from,
        to,
        dates,
        resumed_after,
        vars,
    })
}

/// The logical date of `job`'s run for `date`: 00:00 of it in the job's zone.
pub fn logical_date(job: &Job, date: NaiveDate) -> DateTime<Utc> {
    params::parse_date(&date.to_string(), params::zone_of(job)).unwrap_or_else(|_| {
        DateTime::from_naive_utc_and_offset(date.and_hms_opt(0, 0, 0).unwrap_or_default(), Utc)
    })
}

/// Runs the dates of `plan` in order: each with `base`'s vars, that date as its logical date
/// and `backfill` as its trigger, through `run_one` (which runs and prints it, returning its
/// exit code). A date whose run does not commit stops the backfill with that code; each date
/// that does is recorded ([`done`]) before the next starts. `say` gets a line per date and a
/// closing line.
///
/// # Errors
/// What `run_one` returns, or [`Error::State`] when progress cannot be recorded.
pub async fn run_dates<F, Fut>(
    project: &Project,
    job: &Job,
    plan: &DatePlan,
    base: &params::RunParams,
    mut run_one: F,
    say: impl Fn(&str),
) -> Result<i32>
where
    F: FnMut(params::RunParams) -> Fut,
    Fut: std::future::Future<Output = Result<i32>>,
{
    let total = plan.dates.len();
    for (i, date) in plan.dates.iter().enumerate() {
        say(&format!(
            "backfill {}: date {date} ({} of {total})",
            job.name,
            i + 1
        ));
        let run = params::RunParams {
            logical_date: logical_date(job, *date),
            trigger: "backfill",
            ..base.clone()
        };
        let code = run_one(run).await?;
        if code != crate::error::EXIT_OK {
            say(&format!(
                "backfill stopped at {date}: its run did not commit (above); dates before it are committed; the same command resumes at {date}"
            ));
            return Ok(code);
        }
        done(project, job, plan, *date)?;
    }
    say(&format!(
        "backfill {}: {total} date(s) committed, {} .. {}",
        job.name, plan.from, plan.to
    ));
    Ok(crate::error::EXIT_OK)
}

/// Records that `date` of the backfill in `plan` committed; forgets the backfill after its
/// last date.
///
/// # Errors
/// [`Error::State`] when the state store cannot be written.
pub fn done(project: &Project, job: &Job, plan: &DatePlan, date: NaiveDate) -> Result<()> {
    let store = StateStore::of(project)?;
    if plan.dates.last() == Some(&date) {
        store.backfill_forget(&job.name, &plan.vars, plan.from, plan.to)
    } else {
        store.backfill_progress(&job.name, &plan.vars, plan.from, plan.to, Some(date))
    }
}

/// Refuses targets a date backfill would double or replace.
fn check_target(job: &Job) -> Result<()> {
    let per_date_path = job
        .target
        .path()
        .is_some_and(|p| params::references(p.get_ref(), "${run."));
    // A Delta overwrite that replaces only the date's rows.
    let per_date_rows = job
        .target
        .replace_where()
        .is_some_and(|p| params::references(p.get_ref(), "${run."));
    let per_date_path = per_date_path || per_date_rows;
    match job.target.mode() {
        LoadMode::Append => Err(usage(
            format!("job `{}` appends, so re-running a date of the backfill would load its rows twice", job.name),
            "write each date to its own folder with `mode = \"overwrite\"` and `path = \"out/x/date=${run.date}\"`, or use `mode = \"merge\"`",
        )),
        LoadMode::Scd2 => Err(usage(
            format!("job `{}` keeps history (scd2) stamped with each run's clock, so backfilling past dates would make old values current", job.name),
            "backfill into a `merge` or per-date `overwrite` target, or load the dates in order with `sluice run --date` before the current loads start",
        )),
        LoadMode::Overwrite if !per_date_path => Err(usage(
            format!("job `{}` overwrites one target, so each date of the backfill would replace the dates before it", job.name),
            "give the target a folder per date, `path = \"out/x/date=${run.date}\"`, replace only the date's rows of a Delta table with `replace_where = \"day = '${run.date}'\"`, or use `mode = \"merge\"`",
        )),
        _ => Ok(()),
    }
}

fn day(text: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        usage(
            format!("`{text}` is not a date"),
            "a date backfill takes days: `--from 2026-11-01 --to 2026-11-08`",
        )
    })
}

fn usage(message: String, hint: &str) -> Error {
    Error::Usage {
        message,
        hint: Some(hint.into()),
    }
}
