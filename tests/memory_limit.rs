//! `memory_limit`: operators that can spill do, with the same rows loaded; one that cannot
//! fails the run with an error naming the limit, and the target keeps its previous version.

use crate::common::{flights_diff, report, show, Workdir};

const FLIGHT_MAPPING: &str = "mappings/nycflights13_to_flight.toml";

/// The flights job with a `unique` rule: its window sorts every row by the key, which is what
/// a small memory limit makes spill.
fn flights_with_unique_rule() -> Workdir {
    let w = Workdir::project();
    let mapping = w.read(FLIGHT_MAPPING);
    let cut = mapping.find("[[test]]").unwrap();
    w.write(
        FLIGHT_MAPPING,
        &format!(
            "{}[[rule]]\nname = \"one_row_per_flight\"\nunique = [\"carrier_code\", \"flight_number\", \"scheduled_departure\"]\n\n{}",
            &mapping[..cut],
            &mapping[cut..]
        ),
    );
    w
}

fn with_memory_limit(w: &Workdir, limit: &str) {
    let job = w.read("jobs/flights.toml");
    w.write(
        "jobs/flights.toml",
        &format!("memory_limit = \"{limit}\"\n{job}"),
    );
}

#[test]
fn a_run_over_its_memory_limit_spills_and_loads_the_same_rows() {
    let w = flights_with_unique_rule();
    let free = w.run(&["run", "flights", "--json"]);
    assert_eq!(free.status.code(), Some(0), "{}", show(&free));
    assert!(report(&free).get("spill").is_none(), "{}", show(&free));
    let unlimited = w.path().join("unlimited");
    crate::common::copy(&w.path().join("warehouse/flights"), &unlimited);

    spilling(&w);
    let limited = w.run(&["run", "flights", "--json"]);
    assert_eq!(limited.status.code(), Some(0), "{}", show(&limited));
    let r = report(&limited);
    assert!(
        r["spill"]["files"].as_u64().unwrap_or(0) > 0
            && r["spill"]["bytes"].as_u64().unwrap_or(0) > 0,
        "the sort of the unique rule should have spilled: {}",
        show(&limited)
    );
    assert_eq!(r["rows"], report(&free)["rows"]);
    let diff = flights_diff(&unlimited, &w.path().join("warehouse/flights"));
    let loaded = report(&free)["rows"]["written"].as_u64().unwrap();
    assert_eq!(diff, format!("{loaded}|{loaded}|0|0"));
    // The spill folder is the one configured, and the run's files are gone with it.
    assert!(job_spill_folder(&w).is_dir());
    assert_eq!(spill_folders(&w), Vec::<String>::new());
}

/// A memory limit that makes the unique rule's sort spill, into `spill/`. Measured here: from
/// 192 MiB to 512 MiB this job spills (13 files at 256 MiB) and succeeds; at 128 MiB merging
/// the spilled runs needs more than the limit.
fn spilling(w: &Workdir) {
    with_memory_limit(w, "256MiB");
    let project = w.read("sluice.toml");
    w.write(
        "sluice.toml",
        &project.replace(
            "[defaults]\n",
            "[defaults]\nspill_dir = \"spill\"\ntarget_partitions = 2\n",
        ),
    );
}

/// `spill/<project>-<hash>/flights`: the one project folder in `spill/`, then the job's.
fn job_spill_folder(w: &Workdir) -> std::path::PathBuf {
    let projects: Vec<_> = std::fs::read_dir(w.path().join("spill"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(
        projects.len(),
        1,
        "one project folder in spill/: {projects:?}"
    );
    let name = projects[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(name.starts_with("nycflights-"), "{name}");
    projects[0].join("flights")
}

/// The `datafusion-*` folders (one per live or killed run) in the flights job's spill folder.
fn spill_folders(w: &Workdir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(job_spill_folder(w))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| n.starts_with("datafusion-"));
    names
}

#[test]
fn the_spill_folder_of_a_killed_run_is_removed_by_the_next_run() {
    let w = flights_with_unique_rule();
    spilling(&w);
    crate::common::run_killed_at(&w, &["run", "flights"], "before_publish");
    assert_eq!(spill_folders(&w).len(), 1, "the killed run's folder stays");
    // The sweep leaves folders changed within a second of a run's start (its own).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let next = w.run(&["run", "flights", "--json"]);
    assert_eq!(next.status.code(), Some(0), "{}", show(&next));
    assert_eq!(report(&next)["outputs"][0]["committed"], true);
    assert_eq!(spill_folders(&w), Vec::<String>::new());
}

#[test]
fn a_run_that_does_not_fit_its_memory_limit_fails_and_keeps_the_target() {
    let w = Workdir::project();
    let first = w.run(&["run", "flights"]);
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    let before = w.path().join("before");
    crate::common::copy(&w.path().join("warehouse/flights"), &before);

    with_memory_limit(&w, "1MiB");
    let out = w.run(&["run", "flights", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["status"], "failed");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("needs more memory than its `memory_limit` allows")
            && message.contains("Raise `memory_limit`"),
        "{}",
        show(&out)
    );
    let diff = flights_diff(&before, &w.path().join("warehouse/flights"));
    assert_eq!(diff, "329174|329174|0|0");
}

#[test]
fn a_memory_limit_that_is_not_a_size_is_reported_at_its_line() {
    let w = Workdir::project();
    with_memory_limit(&w, "lots");
    let project = w.read("sluice.toml");
    w.write(
        "sluice.toml",
        &project.replace("[defaults]\n", "[defaults]\nmemory_limit = \"512KiB\"\n"),
    );
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("jobs/flights.toml:1") && err.contains("`lots` is not a memory size"),
        "{}",
        show(&out)
    );
    assert!(
        err.contains("sluice.toml:")
            && err.contains("`512KiB` is below the smallest memory limit, 1 MiB"),
        "{}",
        show(&out)
    );
}
