//! A job's `schedule` as validated: a cron expression (parsed by the `croner` crate) read in
//! an IANA time zone (`chrono-tz`), and what to do with fires missed while the daemon was down.
//!
//! Fire times are computed on the zone's wall clock, so daylight-saving changes neither skip
//! nor double a run (croner follows the Open Cron Pattern Specification here):
//!
//! | pattern                          | spring forward (a wall-clock hour is skipped)     | autumn back (a wall-clock hour happens twice) |
//! |----------------------------------|---------------------------------------------------|-----------------------------------------------|
//! | fixed time (`30 1 * * *`)        | runs once, at the first instant after the gap     | runs once, at the first of the two instants   |
//! | interval (`*/15 * * * *`, `0 * * * *`) | runs at every real instant that matches     | runs at both instants: every 15 minutes of real time |
//!
//! The decision and the test behind it: `docs/decisions/0008-scheduler-cron-library.md`.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

use super::spec::Misfire;

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The cron expression as written (`0 2 * * *`).
    pub expression: String,
    /// The parsed expression.
    cron: Cron,
    /// The zone whose wall clock the expression is read on.
    pub timezone: chrono_tz::Tz,
    /// What to do with fires missed while the daemon was down.
    pub misfire: Misfire,
    /// After this many consecutive failed fires the daemon pauses the job (its circuit
    /// opens) until `sluice resume JOB`; 0 never pauses. Default [`DEFAULT_PAUSE_AFTER`].
    pub pause_after_failures: u32,
}

/// Consecutive failed fires after which a scheduled job is paused, unless its schedule says
/// otherwise: three nights of failures is a problem for a person, not for more retries.
pub const DEFAULT_PAUSE_AFTER: u32 = 3;

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
            && self.timezone == other.timezone
            && self.misfire == other.misfire
            && self.pause_after_failures == other.pause_after_failures
    }
}

impl Schedule {
    /// Parses `expression` (five fields, or six with seconds first) in `timezone` (an IANA
    /// name; `None` is UTC).
    ///
    /// # Errors
    /// [`ScheduleError::Cron`] or [`ScheduleError::Timezone`], each with a message and a hint.
    pub fn parse(
        expression: &str,
        timezone: Option<&str>,
        misfire: Misfire,
    ) -> Result<Schedule, ScheduleError> {
        let timezone = match timezone {
            None => chrono_tz::UTC,
            Some(name) => parse_timezone(name)?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| ScheduleError::Cron {
                message: format!("`{expression}` is not a cron expression: {e}"),
                hint: "five fields: minute hour day-of-month month day-of-week, such as \"0 2 * * *\" (02:00 every day) or \"*/15 * * * 1-5\" (every 15 minutes on weekdays); a sixth field in front counts seconds".into(),
            })?;
        Ok(Schedule {
            expression: expression.to_string(),
            cron,
            timezone,
            misfire,
            pause_after_failures: DEFAULT_PAUSE_AFTER,
        })
    }

    /// The first fire strictly after `after`, or `None` when the expression never matches
    /// again (such as `0 0 30 2 *`, the 30th of February).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The latest fire at or before `at`, if any.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.timezone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// How the schedule reads: `0 2 * * * (Europe/London)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.expression, self.timezone.name())
    }
}

/// Why a `schedule` is invalid.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    Cron {
        /// What is wrong, quoting the expression.
        message: String,
        /// How to write one.
        hint: String,
    },
    /// The time zone is not an IANA name.
    Timezone {
        /// What is wrong, quoting the name.
        message: String,
        /// The closest IANA name, or how to find one.
        hint: String,
    },
}

/// An IANA time zone by name (`Europe/London`), with a did-you-mean on a typo.
///
/// # Errors
/// [`ScheduleError::Timezone`].
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, ScheduleError> {
    chrono_tz::Tz::from_str(name).map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
        let hint = match crate::diagnostic::did_you_mean(name, names) {
            Some(close) => format!("did you mean `{close}`?"),
            None => "use an IANA time zone name such as \"Europe/London\", \"America/New_York\" or \"UTC\" (the tz database's names, as `timedatectl list-timezones` prints them)".into(),
        };
        ScheduleError::Timezone {
            message: format!("`{name}` is not an IANA time zone name"),
            hint,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("an RFC 3339 instant")
    }

    fn fires(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = s.next_after(t).expect("a next fire");
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .collect()
    }

    fn london(expr: &str) -> Schedule {
        Schedule::parse(expr, Some("Europe/London"), Misfire::RunOnce).expect("valid")
    }

    // London: BST starts 2026-03-29 01:00 UTC (01:00 GMT becomes 02:00 BST) and ends
    // 2026-10-25 01:00 UTC (02:00 BST becomes 01:00 GMT).

    #[test]
    fn a_daily_fire_keeps_its_wall_clock_time_across_both_changes() {
        let s = london("0 2 * * *");
        assert_eq!(
            fires(&s, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T02:00:00Z", // GMT
                "2026-03-29T01:00:00Z", // BST: 02:00 local is an hour earlier in UTC
                "2026-03-30T01:00:00Z",
            ]
        );
        assert_eq!(
            fires(&s, "2026-10-24T00:00:00Z", 3),
            [
                "2026-10-24T01:00:00Z", // BST
                "2026-10-25T02:00:00Z", // GMT again
                "2026-10-26T02:00:00Z",
            ]
        );
    }

    #[test]
    fn a_fire_in_the_spring_gap_runs_once_at_the_first_instant_after_it() {
        // 01:30 does not exist in London on 2026-03-29.
        let s = london("30 1 * * *");
        assert_eq!(
            fires(&s, "2026-03-28T12:00:00Z", 2),
            [
                "2026-03-29T01:00:00Z", // 02:00 BST, the first instant after the gap
                "2026-03-30T00:30:00Z", // 01:30 BST
            ]
        );
    }

    #[test]
    fn a_fire_in_the_autumn_overlap_runs_once() {
        // 01:30 happens twice in London on 2026-10-25: at 00:30 UTC (BST) and 01:30 UTC (GMT).
        let s = london("30 1 * * *");
        assert_eq!(
            fires(&s, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
    }

    #[test]
    fn an_interval_schedule_follows_real_time_through_the_overlap() {
        // Hourly: the repeated wall-clock hour is a real hour, so it fires in it.
        let s = london("0 * * * *");
        assert_eq!(
            fires(&s, "2026-10-24T23:30:00Z", 3),
            [
                "2026-10-25T00:00:00Z", // 01:00 BST
                "2026-10-25T01:00:00Z", // 01:00 GMT
                "2026-10-25T02:00:00Z", // 02:00 GMT
            ]
        );
    }

    #[test]
    fn seconds_are_an_optional_sixth_field_in_front() {
        let s = Schedule::parse("*/20 * * * * *", None, Misfire::Skip).expect("valid");
        assert_eq!(
            fires(&s, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:40Z",
                "2026-01-01T00:01:00Z"
            ]
        );
    }

    #[test]
    fn the_latest_fire_at_or_before_an_instant_counts_the_instant_itself() {
        let s = london("0 2 * * *");
        assert_eq!(
            s.latest_at_or_before(at("2026-03-30T01:00:00Z")),
            Some(at("2026-03-30T01:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(at("2026-03-30T00:59:59Z")),
            Some(at("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_explained() {
        let Err(ScheduleError::Cron { message, .. }) =
            Schedule::parse("0 25 * * *", None, Misfire::RunOnce)
        else {
            panic!("hour 25 accepted")
        };
        assert!(message.contains("`0 25 * * *`"), "{message}");
        let Err(ScheduleError::Timezone { hint, .. }) =
            Schedule::parse("0 2 * * *", Some("Europe/Londn"), Misfire::RunOnce)
        else {
            panic!("a misspelled zone accepted")
        };
        assert_eq!(hint, "did you mean `Europe/London`?");
    }
}
