//! A scratch copy of the project and a way to run the real binary in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

/// Root of the repository (where Cargo.toml is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch project folder, removed when dropped.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    /// A copy of the repository's project: sluice.toml, mappings/, samples/ and the jobs
    /// that read and write local files (the database jobs need the source databases loaded,
    /// see [`Workdir::project_with_databases`]; the object-store job the local S3 server).
    pub fn project() -> Workdir {
        let w = Workdir::project_with_databases();
        for e in std::fs::read_dir(w.path().join("jobs")).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            if text.contains("connection = ") || text.contains("s3://") {
                std::fs::remove_file(p).unwrap();
            }
        }
        w
    }

    /// A copy of the whole repository project, database jobs included.
    pub fn project_with_databases() -> Workdir {
        let dir = tempfile::tempdir().expect("tempdir");
        for item in ["sluice.toml", "mappings", "jobs", "samples"] {
            copy(&repo().join(item), &dir.path().join(item));
        }
        Workdir { dir }
    }

    /// An empty folder with only the given files.
    pub fn with_files(files: &[(&str, &str)]) -> Workdir {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Workdir { dir };
        for (path, text) in files {
            w.write(path, text);
        }
        w
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    /// A `sluice` command running in this folder.
    pub fn sluice(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.args(args)
            .current_dir(self.path())
            .env_remove("SLUICE_LOG");
        c
    }

    /// Runs `sluice ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.sluice(args).output().expect("run sluice")
    }
}

/// Copies a file or a folder tree.
pub fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

/// stdout and stderr, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Reads a Parquet folder or file (Hive partitions become columns) and runs `sql` over it as
/// table `t`.
pub fn query(path: &Path, sql: &str) -> Vec<RecordBatch> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = SessionContext::new();
        let mut opts = ParquetReadOptions::default();
        let partitioned = path.is_dir()
            && std::fs::read_dir(path)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains('='));
        if partitioned {
            opts = opts.table_partition_cols(vec![(
                "origin".to_string(),
                datafusion::arrow::datatypes::DataType::Utf8,
            )]);
        }
        ctx.register_parquet("t", path.to_str().unwrap(), opts)
            .await
            .unwrap();
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    })
}

/// Compares two Parquet folders of flights (partitioned by `origin`) as multisets of rows,
/// with EXCEPT ALL both ways: `"<rows in a>|<rows in b>|<only in a>|<only in b>"`.
pub fn flights_diff(a: &Path, b: &Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let diff = rt.block_on(async {
        let ctx = SessionContext::new();
        for (name, dir) in [("a", a), ("b", b)] {
            let opts = ParquetReadOptions::default().table_partition_cols(vec![(
                "origin".to_string(),
                datafusion::arrow::datatypes::DataType::Utf8,
            )]);
            ctx.register_parquet(name, dir.to_str().unwrap(), opts)
                .await
                .unwrap();
        }
        let sql = "SELECT (SELECT count(*) FROM a) AS a_rows, (SELECT count(*) FROM b) AS b_rows, \
                   (SELECT count(*) FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM b)) AS a_only, \
                   (SELECT count(*) FROM (SELECT * FROM b EXCEPT ALL SELECT * FROM a)) AS b_only";
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    });
    rows(&diff).join("\n")
}

/// The batches as text lines (one per row, columns joined by `|`).
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            out.push(
                fmts.iter()
                    .map(|f| f.value(i).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}

/// The run report JSON printed by `sluice run --json`.
pub fn report(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", show(o)))
}

/// Every file under `dir`, recursively (none when it does not exist).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Runs `sluice ARGS` in `w` with the process killed at the crash point `point`
/// (`SLUICE_CRASH_AT`); asserts it died by the signal.
pub fn run_killed_at(w: &Workdir, args: &[&str], point: &str) {
    run_killed_at_with(w.sluice(args), point);
}

/// [`run_killed_at`] for a command set up by the caller (its environment, say).
pub fn run_killed_at_with(mut cmd: std::process::Command, point: &str) {
    let o = cmd.env("SLUICE_CRASH_AT", point).output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        o.status.signal(),
        Some(9),
        "expected a kill at {point}: {}",
        show(&o)
    );
}
