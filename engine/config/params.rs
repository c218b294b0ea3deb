//! Run parameters: every run has a **logical date** (the instant it stands for: a scheduled
//! run's fire time, a manual run's start, or `--date`) and the values of its job's **vars**
//! (`[vars]` in the job file, overridden by `--var KEY=VALUE` or the API). Paths, database
//! queries, mapping expressions and SQL checks use them as `${...}` references, replaced once,
//! before the job is compiled ([`apply`]):
//!
//! | reference        | value (read in the job's zone: its schedule's `timezone`, else UTC) |
//! |------------------|---------------------------------------------------------------------|
//! | `${run.date}`    | the logical date's calendar day, `2026-11-30`                        |
//! | `${run.time}`    | the logical date, RFC 3339 with the zone's offset, `2026-11-30T02:00:00+00:00` |
//! | `${run.start}`   | the start of that day (00:00 in the zone), RFC 3339                  |
//! | `${run.end}`     | the start of the next day, RFC 3339 (`start <= t < end` is the day)  |
//! | `${var.NAME}`    | the value of var `NAME`: given for this run, else its `[vars]` default |
//!
//! `${env:...}` and `${file:...}` are left for [`super::interpolate`], which resolves them when
//! a file or connection is opened; `$$` stays a literal `$`.
//!
//! Var values are restricted to ASCII letters, digits, spaces and `_ - . : + @`, not empty,
//! not starting or ending with `.` or a space, with no `..` and no `--`: they are written into
//! paths and SQL as text, so a value cannot name another folder (`..`, `.`, nothing), leave
//! the string literal it is written in, or comment out the rest of a query. Write them inside
//! quotes in SQL (`'${var.region}'`).

use crate::invalid;
use crate::invalid::InvalidValue;
use std::collections::BTreeMap;
use std::ops::Range;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use super::{Job, Mapping, Project};
use crate::diagnostic::Diagnostic;

/// The parameters of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunParams {
    /// The instant the run stands for.
    pub logical_date: DateTime<Utc>,
    /// Values given for this run (`--var`, the API), over the job's `[vars]` defaults.
    pub vars: BTreeMap<String, String>,
    /// The zone to read the logical date in, when not the job's own ([`zone_of`]): a job run
    /// `after` another reads it in that job's zone, so both see the same `${run.date}`.
    pub zone: Option<chrono_tz::Tz>,
    /// What started the run: `manual` (`sluice run`), `schedule`, `api`, `after` (a job it
    /// runs after committed), `backfill` or `replay`.
    pub trigger: &'static str,
}

impl RunParams {
    /// A run standing for `logical_date`, with no vars given.
    pub fn at(logical_date: DateTime<Utc>) -> RunParams {
        RunParams {
            logical_date,
            vars: BTreeMap::new(),
            zone: None,
            trigger: "manual",
        }
    }
}

/// Parses a `--date` value: `YYYY-MM-DD` (00:00 of that day in `zone`) or an RFC 3339
/// instant.
///
/// # Errors
/// A message with the accepted forms.
pub fn parse_date(
    text: &str,
    zone: chrono_tz::Tz,
) -> std::result::Result<DateTime<Utc>, InvalidValue> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(d) => Ok(day_start(d, zone)),
        Err(_) => Err(invalid!(
            "`{text}` is not a date: write `2026-11-30` (a day, read in the job's time zone) or an RFC 3339 instant such as `2026-11-30T02:00:00Z`"
        )),
    }
}

/// Parses `KEY=VALUE` (a `--var`).
///
/// # Errors
/// A message when there is no `=`, or the key or value is not allowed ([`check_var`]).
pub fn parse_var(text: &str) -> std::result::Result<(String, String), InvalidValue> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(invalid!("`{text}` is not KEY=VALUE"));
    };
    check_var(key, value)?;
    Ok((key.to_string(), value.to_string()))
}

/// Checks a var's name (letters, digits, `_`, not starting with a digit) and value (see the
/// module's rules).
///
/// # Errors
/// A message saying what is not allowed.
pub fn check_var(key: &str, value: &str) -> std::result::Result<(), InvalidValue> {
    let name_ok = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return Err(invalid!(
            "`{key}` is not a var name: use letters, digits and `_`, not starting with a digit"
        ));
    }
    let value_ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _-.:+@".contains(c))
        && !value.starts_with(['.', ' '])
        && !value.ends_with(['.', ' '])
        && !value.contains("..")
        && !value.contains("--");
    if !value_ok {
        return Err(invalid!(
            "the value of var `{key}` must be ASCII letters, digits, spaces and `_ - . : + @`, not empty, not starting or ending with `.` or a space, without `..` or `--` (it is written into paths and SQL as text)"
        ));
    }
    Ok(())
}

/// 00:00 of `day` in `zone` (the first instant of the day where a daylight-saving change
/// skips midnight).
fn day_start(day: NaiveDate, zone: chrono_tz::Tz) -> DateTime<Utc> {
    let mut t = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    // A zone that skips midnight skips at most a few hours: the first wall-clock time that
    // exists is the start of the day.
    for _ in 0..24 * 4 {
        if let Some(z) = zone.from_local_datetime(&t).earliest() {
            return z.with_timezone(&Utc);
        }
        t += chrono::Duration::minutes(15);
    }
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

/// The calendar day `logical_date` falls on in `zone`, and that day's bounds
/// (`start <= t < end`), as `${run.date}`, `${run.start}` and `${run.end}` give them.
pub fn day_of(
    zone: chrono_tz::Tz,
    logical_date: DateTime<Utc>,
) -> (NaiveDate, DateTime<Utc>, DateTime<Utc>) {
    let day = logical_date.with_timezone(&zone).date_naive();
    let end = day_start(day.succ_opt().unwrap_or(day), zone);
    (day, day_start(day, zone), end)
}

/// The zone a job's logical dates are read in: its schedule's, else UTC.
pub fn zone_of(job: &Job) -> chrono_tz::Tz {
    job.schedule
        .as_ref()
        .map(|s| s.timezone)
        .unwrap_or(chrono_tz::UTC)
}

/// The values of the references for one run of a job.
struct Values<'a> {
    zone: chrono_tz::Tz,
    params: &'a RunParams,
    defaults: &'a BTreeMap<String, String>,
    /// Set when a `${run.*}` reference was replaced.
    used_run: std::cell::Cell<bool>,
}

impl<'a> Values<'a> {
    fn new(job: &'a Job, params: &'a RunParams) -> Values<'a> {
        Values {
            zone: params.zone.unwrap_or_else(|| zone_of(job)),
            params,
            defaults: &job.vars,
            used_run: Default::default(),
        }
    }

    fn get(&self, reference: &str) -> Result<String, String> {
        if reference.starts_with("run.") {
            self.used_run.set(true);
        }
        let local = self.params.logical_date.with_timezone(&self.zone);
        let day = local.date_naive();
        let rfc = |t: DateTime<Utc>| t.with_timezone(&self.zone).to_rfc3339();
        match reference {
            "run.date" => Ok(day.format("%Y-%m-%d").to_string()),
            "run.time" => Ok(local.to_rfc3339()),
            "run.start" => Ok(rfc(day_start(day, self.zone))),
            "run.end" => Ok(rfc(day_start(day.succ_opt().unwrap_or(day), self.zone))),
            r if r.starts_with("run.") => Err(format!(
                "unknown reference `${{{r}}}`: the run's references are `${{run.date}}`, `${{run.time}}`, `${{run.start}}` and `${{run.end}}`"
            )),
            r => {
                let name = &r["var.".len()..];
                self.params
                    .vars
                    .get(name)
                    .or_else(|| self.defaults.get(name))
                    .cloned()
                    .ok_or_else(|| {
                        format!("var `{name}` is not declared: add it to the job's [vars] with a default, such as `{name} = \"...\"`")
                    })
            }
        }
    }
}

/// `template` with every `${run.*}` and `${var.*}` replaced; `${env:...}`, `${file:...}` and
/// `$$` kept as written.
///
/// # Errors
/// The first unknown reference, as a message.
fn substitute(template: &str, values: &Values<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push_str("$$");
            rest = r;
            continue;
        }
        let reference = after
            .strip_prefix('{')
            .and_then(|b| b.find('}').map(|end| &b[..end]))
            .filter(|r| r.starts_with("run.") || r.starts_with("var."));
        match reference {
            Some(r) => {
                out.push_str(&values.get(r)?);
                rest = &after[r.len() + 2..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// True when `template` uses a run reference (`${run.*}` or `${var.*}`; `$${` is a literal).
pub fn uses_params(template: &str) -> bool {
    references(template, "${run.") || references(template, "${var.")
}

/// True when `template` holds `needle` (starting with `$`) not escaped as `$$`.
pub(crate) fn references(template: &str, needle: &str) -> bool {
    template.match_indices(needle).any(|(i, _)| {
        // An odd run of `$` before the match's own `$` escapes it.
        template[..i]
            .chars()
            .rev()
            .take_while(|c| *c == '$')
            .count()
            % 2
            == 0
    })
}

/// True when a run of `job` depends on its logical date: a `${run.*}` reference in the job's
/// source paths, queries, target path or SQL checks, or in its mapping's expressions.
pub fn uses_logical_date(project: &Project, job: &Job) -> bool {
    let params = RunParams::at(Utc::now());
    let values = Values::new(job, &params);
    let _ = substitute_all(project, job, &values);
    values.used_run.get()
}

/// The part of a path template before its first run reference: the folder every run's path
/// is under (for the checks that keep outputs clear of sources).
pub fn static_prefix(template: &str) -> &str {
    let cut = [template.find("${run."), template.find("${var.")]
        .into_iter()
        .flatten()
        .min();
    match cut {
        Some(i) => &template[..template[..i].rfind('/').map_or(0, |s| s + 1)],
        None => template,
    }
}

/// Where a substitution failed: the file and the key, for the diagnostic.
struct Site<'a> {
    src: &'a super::SourceText,
    key: String,
    span: Option<Range<usize>>,
}

impl Site<'_> {
    fn error(&self, message: String) -> Diagnostic {
        let mut d = self.src.diagnostic(self.span.clone(), &self.key, message);
        d.hint = Some(
            "run references: ${run.date}, ${run.time}, ${run.start}, ${run.end}; vars: ${var.NAME} with NAME in the job's [vars]"
                .into(),
        );
        d
    }
}

/// `project` and `job` as one run with `params` sees them: every run reference in the job's
/// source paths and queries, target path, SQL checks, and in its mapping's expressions,
/// replaced; [`Job::run`] set to `params`.
///
/// # Errors
/// Every reference that cannot be replaced (unknown, an undeclared var, a var given that the
/// job does not declare, a reference in the quarantine path), at its file and line.
pub fn apply(
    project: &Project,
    job: &Job,
    params: &RunParams,
) -> Result<(Project, Job), Vec<Diagnostic>> {
    let mut errors = Vec::new();
    for (name, value) in &params.vars {
        if !job.vars.contains_key(name) {
            let known: Vec<&str> = job.vars.keys().map(String::as_str).collect();
            let mut d = job.src.diagnostic(
                None,
                "vars",
                format!(
                    "var `{name}` was given for this run, but job `{}` does not declare it",
                    job.name
                ),
            );
            d.hint = Some(match super::did_you_mean(name, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("declare it in the job file: [vars] {name} = \"default\""),
            });
            errors.push(d);
        } else if let Err(e) = check_var(name, value) {
            errors.push(job.src.diagnostic(None, "vars", e));
        }
    }
    let (project, mut job, more) = substitute_all(project, job, &Values::new(job, params));
    errors.extend(more);
    job.run = Some(params.clone());
    if errors.is_empty() {
        Ok((project, job))
    } else {
        Err(errors)
    }
}

/// `project` and `job` with every run reference replaced with `values`, and the references
/// that could not be.
fn substitute_all(
    project: &Project,
    job: &Job,
    values: &Values<'_>,
) -> (Project, Job, Vec<Diagnostic>) {
    let mut errors = Vec::new();
    let mut job = job.clone();
    apply_job(&mut job, values, &mut errors);
    let mut project = project.clone();
    if let Some(mapping) = project.mappings.get_mut(&job.mapping) {
        apply_mapping(mapping, values, &mut errors);
    }
    (project, job, errors)
}

/// Replaces `text` in place, or records why it cannot be.
fn replace(text: &mut String, site: Site<'_>, values: &Values<'_>, errors: &mut Vec<Diagnostic>) {
    if !text.contains("${") {
        return;
    }
    match substitute(text, values) {
        Ok(v) => *text = v,
        Err(e) => errors.push(site.error(e)),
    }
}

fn replace_spanned(
    text: &mut serde_spanned::Spanned<String>,
    src: &super::SourceText,
    key: String,
    values: &Values<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    let span = text.span();
    let mut value = text.get_ref().clone();
    replace(
        &mut value,
        Site {
            src,
            key,
            span: Some(span.clone()),
        },
        values,
        errors,
    );
    *text = serde_spanned::Spanned::new(span, value);
}

fn apply_job(job: &mut Job, values: &Values<'_>, errors: &mut Vec<Diagnostic>) {
    let src = job.src.clone();
    for (name, s) in job.sources.iter_mut() {
        if let Some(p) = s.path_mut() {
            replace_spanned(p, &src, format!("sources.{name}.path"), values, errors);
        }
        let query = match s {
            crate::config::spec::SourceSpec::Database(d) => d.query.as_mut(),
            _ => None,
        };
        if let Some(q) = query {
            replace_spanned(q, &src, format!("sources.{name}.query"), values, errors);
        }
    }
    if let Some(p) = job.target.replace_where_mut() {
        replace_spanned(p, &src, "target.replace_where".into(), values, errors);
    }
    if let Some(p) = job.target.path_mut() {
        replace_spanned(p, &src, "target.path".into(), values, errors);
    }
    if let Some(p) = job
        .quarantine
        .path
        .as_ref()
        .filter(|p| uses_params(p.get_ref()))
    {
        errors.push(src.diagnostic(
            Some(p.span()),
            "quarantine.path",
            "the quarantine cannot use run references: it is one folder (or Delta table) per job, and each run's rows in it are already marked with its run id".to_string(),
        ));
    }
    for c in job.checks.sql.iter_mut() {
        replace_spanned(
            &mut c.expr,
            &src,
            format!("checks.sql.{}", c.name),
            values,
            errors,
        );
    }
}

fn apply_mapping(mapping: &mut Mapping, values: &Values<'_>, errors: &mut Vec<Diagnostic>) {
    let src = mapping.src.clone();
    let named = |e: &mut super::NamedExpr, key: String, errors: &mut Vec<Diagnostic>| {
        let site = Site {
            src: &src,
            key,
            span: e.span.clone(),
        };
        replace(&mut e.sql, site, values, errors);
    };
    for e in mapping.lets.iter_mut() {
        let key = format!("let.{}", e.name);
        named(e, key, errors);
    }
    for e in mapping.fields.iter_mut() {
        let key = format!("fields.{}", e.name);
        named(e, key, errors);
    }
    for r in mapping.rules.iter_mut() {
        match &mut r.test {
            super::RuleTest::Check(e) => named(e, format!("rules.{}.check", r.name), errors),
            super::RuleTest::Unique { order_by, .. } => {
                for e in order_by.iter_mut() {
                    named(e, format!("rules.{}.order_by", r.name), errors);
                }
            }
            super::RuleTest::References { .. } => {}
        }
    }
    for j in mapping.joins.iter_mut() {
        replace_spanned(
            &mut j.on,
            &src,
            format!("joins.{}.on", j.source.alias),
            values,
            errors,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(
        params: &'a RunParams,
        defaults: &'a BTreeMap<String, String>,
        zone: chrono_tz::Tz,
    ) -> Values<'a> {
        Values {
            zone,
            params,
            defaults,
            used_run: Default::default(),
        }
    }

    #[test]
    fn run_references_read_the_logical_date_in_the_jobs_zone() {
        // 2026-03-29 00:30 UTC is 00:30 GMT in London, the night the clocks go forward.
        let at = Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap();
        let params = RunParams::at(at);
        let none = BTreeMap::new();
        let london = values(&params, &none, chrono_tz::Europe::London);
        let got = substitute("d=${run.date} ${run.start} ${run.end}", &london).unwrap();
        // The day is 23 hours long: it ends at 00:00 BST (+01:00) on the 30th.
        assert_eq!(
            got,
            "d=2026-03-29 2026-03-29T00:00:00+00:00 2026-03-30T00:00:00+01:00"
        );
        // In Sydney the same instant is already 11:30 on the 29th (+11:00).
        let sydney = values(&params, &none, chrono_tz::Australia::Sydney);
        assert_eq!(
            substitute("${run.time}", &sydney).unwrap(),
            "2026-03-29T11:30:00+11:00"
        );
    }

    #[test]
    fn vars_use_the_given_value_over_the_default_and_keep_env_references() {
        let mut params = RunParams::at(Utc.with_ymd_and_hms(2026, 11, 30, 2, 0, 0).unwrap());
        let defaults: BTreeMap<String, String> = [
            ("region".to_string(), "EU".to_string()),
            ("tier".into(), "gold".into()),
        ]
        .into();
        params.vars.insert("region".into(), "US".into());
        let v = values(&params, &defaults, chrono_tz::UTC);
        assert_eq!(
            substitute("${var.region}/${var.tier}/${env:HOME}/$${run.date}", &v).unwrap(),
            "US/gold/${env:HOME}/$${run.date}",
            "env references and the `$$` escape stay for the resolver"
        );
        let e = substitute("${var.regoin}", &v).unwrap_err();
        assert!(e.contains("`regoin` is not declared"), "{e}");
        let e = substitute("${run.day}", &v).unwrap_err();
        assert!(e.contains("${run.date}"), "{e}");
    }

    #[test]
    fn dates_and_vars_given_on_the_command_line_are_checked() {
        let t = parse_date("2026-11-30", chrono_tz::Europe::Paris).unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 11, 29, 23, 0, 0).unwrap());
        assert!(parse_date("30/11/2026", chrono_tz::UTC).is_err());
        assert_eq!(
            parse_var("region=EU-west 1").unwrap(),
            ("region".into(), "EU-west 1".into())
        );
        assert!(parse_var("region").is_err());
        assert!(
            parse_var("region=../../etc").is_err(),
            "no way out of a folder"
        );
        assert!(
            parse_var("region=x' OR '1'='1").is_err(),
            "no way out of a string literal"
        );
        assert!(parse_var("1st=x").is_err());
        for bad in [
            "region=",
            "region=.",
            "region=x.",
            "region= x",
            "region=0 --",
            "region=é",
        ] {
            assert!(parse_var(bad).is_err(), "{bad} is accepted");
        }
        assert!(references("a/${run.date}", "${run."));
        assert!(!references("a/$${run.date}", "${run."), "escaped");
        assert!(
            references("a/$$${run.date}", "${run."),
            "a `$` then a reference"
        );
    }

    #[test]
    fn the_static_prefix_is_the_folder_before_the_first_reference() {
        assert_eq!(
            static_prefix("out/flights/date=${run.date}/x"),
            "out/flights/"
        );
        assert_eq!(static_prefix("${var.root}/x"), "");
        assert_eq!(static_prefix("out/flights"), "out/flights");
    }
}
