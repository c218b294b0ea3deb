//! A job file (`jobs/<name>.toml`): the mapping it runs, its sources, target, quarantine,
//! dataset checks and retry policy, each checked on its own.

use super::*;

pub(super) const JOB_KEYS: &[&str] = &[
    "description",
    "owner",
    "mapping",
    "sources",
    "target",
    "quarantine",
    "checks",
    "retry",
    "schedule",
    "after",
    "vars",
    "memory_limit",
];

pub(super) fn load_job(src: &SourceText, diags: &mut Diagnostics) -> Option<Job> {
    let before = diags.len();
    let mut r = Reader::new(src, diags);
    let table = r.parse()?;
    let mut description = None;
    let mut owner = None;
    let mut mapping = None;
    let mut sources = BTreeMap::new();
    let mut target: Option<TargetSpec> = None;
    let mut quarantine = QuarantineSpec::default();
    let mut checks = ChecksSpec::default();
    let mut retry = Some(RetryPolicy::default());
    let mut schedule = Some(None);
    let mut after: Option<Spanned<Vec<String>>> = None;
    let mut vars = BTreeMap::new();
    let mut memory_limit = Some(None);
    for (key, item) in table.iter() {
        match key {
            "retry" => {
                if let Some(spec) = r.entry::<RetrySpec>(key, item) {
                    retry = validate_retry(&mut r, &spec);
                }
            }
            "schedule" => {
                schedule = r
                    .entry::<ScheduleSpec>(key, item)
                    .map(|spec| validate_schedule(&mut r, &spec))
            }
            "after" => after = r.entry::<Spanned<Vec<String>>>(key, item),
            "vars" => {
                for (name, value, span) in entries::<String>(&mut r, &table, key) {
                    if let Err(e) = params::check_var(&name, &value) {
                        r.error(span, &format!("vars.{name}"), e, None);
                    }
                    vars.insert(name, value);
                }
            }
            "description" => description = r.entry::<String>(key, item),
            "owner" => owner = r.entry::<String>(key, item),
            "memory_limit" => memory_limit = r.entry::<MemoryLimit>(key, item).map(Some),
            "mapping" => mapping = r.entry::<String>(key, item),
            "sources" => sources = super::job_sources::read_sources(&mut r, &table),
            "target" => target = super::job_target::read_target(&mut r, &table, item),
            "quarantine" => quarantine = r.entry::<QuarantineSpec>(key, item).unwrap_or_default(),
            "checks" => {
                if let Some(c) = r.entry::<ChecksSpec>(key, item) {
                    validate_checks(&mut r, &c);
                    checks = c;
                }
            }
            other => r.unknown_key(&table, other, "", JOB_KEYS),
        }
    }
    if !table.contains_key("mapping") {
        r.missing_key(
            None,
            "",
            "mapping",
            "add `mapping = \"<file name in mappings/ without .toml>\"`",
        );
    }
    if !table.contains_key("target") {
        r.missing_key(
            None,
            "",
            "target",
            "add a [target] section with `format`, `table` and `mode`",
        );
    }
    if let Some(t) = &target {
        if t.mode() == LoadMode::Overwrite {
            for (name, s) in &sources {
                if let Some(span) = s.incremental_span() {
                    r.error(
                        Some(span),
                        &format!("sources.{name}.incremental"),
                        "an incremental source reads only new rows, and an `overwrite` target would replace the table with them",
                        Some("use `mode = \"append\"` (Parquet or database) or `\"merge\"` (database), or remove `incremental`".into()),
                    );
                }
            }
        }
        if t.mode() == LoadMode::Append {
            for (name, s) in &sources {
                if let Some(lb) = s.cursor().and_then(|c| c.lookback.as_ref()) {
                    r.error(
                        Some(lb.span()),
                        &format!("sources.{name}.incremental.lookback"),
                        "a lookback reads rows again, and an `append` target would load them twice",
                        Some("use `mode = \"merge\"` (or `scd2`) on a database target, or remove `lookback`".into()),
                    );
                }
            }
        }
    }
    if let (Some(a), Some(Some(_))) = (&after, &schedule) {
        r.error(
            Some(a.span()),
            "after",
            "a job with `after` runs when the jobs it names succeed, so it cannot also have a `schedule`",
            Some("remove `schedule` (the upstream jobs' schedules decide when it runs), or remove `after`".into()),
        );
    }
    if r.diags.len() > before {
        return None;
    }
    Some(Job {
        name: stem(src),
        src: src.clone(),
        description,
        owner,
        mapping: mapping?,
        sources,
        target: target?,
        quarantine,
        checks,
        retry: retry?,
        schedule: schedule?,
        after: after.map(|a| a.into_inner()).unwrap_or_default(),
        vars,
        memory_limit: memory_limit?,
        run: None,
    })
}

/// The typed schedule, or `None` (with an error at the value at fault) when it is invalid.
fn validate_schedule(r: &mut Reader<'_>, spec: &ScheduleSpec) -> Option<Schedule> {
    let timezone = spec.timezone.as_ref().map(|t| t.get_ref().as_str());
    match Schedule::parse(spec.cron.get_ref(), timezone, spec.misfire) {
        Ok(mut s) => {
            if let Some(n) = spec.pause_after_failures {
                s.pause_after_failures = n;
            }
            Some(s)
        }
        Err(ScheduleError::Cron { message, hint }) => {
            r.error(Some(spec.cron.span()), "schedule.cron", message, Some(hint));
            None
        }
        Err(ScheduleError::Timezone { message, hint }) => {
            let span = spec.timezone.as_ref().map(|t| t.span());
            r.error(span, "schedule.timezone", message, Some(hint));
            None
        }
    }
}

pub(super) fn validate_retry(r: &mut Reader<'_>, spec: &RetrySpec) -> Option<RetryPolicy> {
    let mut ok = true;
    if spec.attempts == 0 {
        let span = key_path_span(r.src, "retry.attempts");
        r.error(
            span,
            "retry.attempts",
            "`attempts` counts the first run too, so it must be at least 1",
            Some("write `attempts = 3` for the first run and two retries".into()),
        );
        ok = false;
    }
    let mut duration = |key: &str, v: &Spanned<String>| match parse_duration(v.get_ref()) {
        Ok(d) => Some(d),
        Err(e) => {
            r.error(
                Some(v.span()),
                &format!("retry.{key}"),
                e,
                Some(DURATION_HINT.into()),
            );
            None
        }
    };
    let backoff = duration("backoff", &spec.backoff);
    let max_backoff = duration("max_backoff", &spec.max_backoff);
    Some(RetryPolicy {
        attempts: spec.attempts,
        backoff: backoff?,
        max_backoff: max_backoff?,
    })
    .filter(|_| ok)
}

/// How durations are written, for hints.
pub const DURATION_HINT: &str =
    "write a duration such as \"500ms\", \"30s\", \"5m\", \"2h\" or \"1d\"";

/// Parses a duration as written in TOML (`"30s"`, `"5m"`, `"2h 30m"`, `"1d"`), with the
/// `humantime` crate's syntax.
///
/// # Errors
/// A message quoting the text.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, InvalidValue> {
    humantime::parse_duration(text.trim()).map_err(|e| invalid!("`{text}` is not a duration ({e})"))
}

pub(super) fn validate_checks(r: &mut Reader<'_>, c: &ChecksSpec) {
    let span_of = |key: &str| key_path_span(r.src, &format!("checks.{key}"));
    if let Some(v) = &c.row_count {
        let rc_span = span_of("row_count");
        if let (Some(w), Some(f)) = (v.warn_below, v.fail_below) {
            if f > w {
                r.error(
                    rc_span.clone(),
                    "checks.row_count",
                    format!("fail_below ({f}) is above warn_below ({w})"),
                    Some(
                        "the fail threshold should be the stricter one: fail_below ≤ warn_below"
                            .into(),
                    ),
                );
            }
        }
        if let (Some(below), Some(above)) = (v.fail_below, v.fail_above) {
            if below > above {
                r.error(
                    rc_span.clone(),
                    "checks.row_count",
                    format!(
                        "fail_below ({below}) is above fail_above ({above}): every run would fail"
                    ),
                    Some(
                        "fail_below is the smallest acceptable row count, fail_above the largest"
                            .into(),
                    ),
                );
            }
        }
        if let (Some(w), Some(f)) = (v.warn_above, v.fail_above) {
            if f < w {
                r.error(
                    rc_span.clone(),
                    "checks.row_count",
                    format!("fail_above ({f}) is below warn_above ({w})"),
                    Some("fail_above should be ≥ warn_above".into()),
                );
            }
        }
    }
    if let Some(v) = &c.quarantine_ratio {
        let q_span = span_of("quarantine_ratio");
        for (name, x) in [("fail_above", v.fail_above), ("warn_above", v.warn_above)] {
            if let Some(x) = x {
                if !(0.0..=1.0).contains(&x) {
                    r.error(
                        span_of(&format!("quarantine_ratio.{name}")).or(q_span.clone()),
                        &format!("checks.quarantine_ratio.{name}"),
                        format!("{name} = {x} is not a fraction between 0 and 1"),
                        Some("write 0.05 for 5%".into()),
                    );
                }
            }
        }
    }
}
