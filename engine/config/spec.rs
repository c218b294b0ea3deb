//! The typed shape of each entry a user writes, exactly as written (before cross-file checks).
//!
//! Every struct denies unknown keys, so a misspelled key is an error with a suggestion rather
//! than a silently ignored setting. The reference of every key, with examples, is
//! `docs/reference.md`; a test checks that its examples load.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::invalid;
use crate::invalid::InvalidValue;
use crate::model::Literal;

pub use super::source_spec::*;
pub use super::target_spec::*;

/// One `[fields.<name>]` entry of a canonical model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Type name, see [`crate::model::FieldType`].
    #[serde(rename = "type")]
    pub data_type: Spanned<String>,
    /// A null value is a row failure.
    #[serde(default)]
    pub required: bool,
    /// Part of the primary key (implies `required`).
    #[serde(default)]
    pub primary_key: bool,
    /// Accepted values.
    #[serde(rename = "enum")]
    pub allowed: Option<Spanned<Vec<Literal>>>,
    /// Inclusive lower bound.
    pub min: Option<Spanned<Literal>>,
    /// Inclusive upper bound.
    pub max: Option<Spanned<Literal>>,
    /// Regular expression the value must match (Rust `regex` syntax).
    pub pattern: Option<Spanned<String>>,
    /// Largest length in characters.
    pub max_length: Option<u32>,
    /// Values that mean missing, turned into null before casting.
    #[serde(default)]
    pub missing_values: Vec<String>,
    /// Free text.
    pub description: Option<String>,
}

/// Join type of a mapping's `[[join]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JoinKind {
    /// Keep every row of the left side; unmatched right columns are null (the default, so a
    /// lookup miss is a quality issue rather than a silently lost row).
    #[default]
    Left,
    /// Keep only rows with a match on both sides.
    Inner,
}

/// One `[[join]]` of a mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    /// Source name the job binds to a concrete file set.
    pub source: Spanned<String>,
    /// Alias used in expressions; defaults to the source name. Needed when joining one source
    /// twice (origin and destination airports).
    #[serde(rename = "as")]
    pub alias: Option<Spanned<String>>,
    /// `left` (default) or `inner`.
    #[serde(rename = "type", default)]
    pub kind: JoinKind,
    /// Join condition, a SQL boolean expression over the aliases joined so far.
    pub on: Spanned<String>,
}

/// What a null result of a rule's check means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NullPolicy {
    /// A check that evaluates to null passes (SQL `CHECK` constraint semantics; the default).
    #[default]
    Pass,
    /// A check that evaluates to null fails.
    Fail,
}

/// What happens to a row that fails a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// The row goes to the quarantine with every reason, not to the target (the default).
    #[default]
    Quarantine,
    /// The row is left out and only counted in the run report.
    Drop,
    /// The row is loaded; the rule's name is added to its `_dq_flags` column.
    Flag,
    /// The run stops: nothing is committed to the target; the quarantine and the report are
    /// written (exit 3).
    Fail,
}

/// `references = { ... }` of a rule: where the values of `field` must exist.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSpec {
    /// A source the job binds (read in full; only `column` is used).
    pub source: Option<Spanned<String>>,
    /// A table already loaded in the warehouse (`warehouse/<table>`, Parquet).
    pub table: Option<Spanned<String>>,
    /// The column (of the source) or field (of the table) holding the valid keys.
    pub column: Spanned<String>,
}

/// One `[[rule]]` of a mapping: a rule on the canonical row. Exactly one of `check`,
/// `unique` or `references` says what the rule tests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Rule name, unique in the mapping (snake_case); shown in the quarantine.
    pub name: Spanned<String>,
    /// Custom rule: a SQL boolean expression; a row passes when it is true.
    pub check: Option<Spanned<String>>,
    /// Duplicate keys within a run: the canonical fields that must be unique together. The
    /// first row of each key (by `order_by`) passes; the others fail.
    pub unique: Option<Spanned<Vec<String>>>,
    /// For `unique`: SQL sort expressions deciding which row is kept first (`"updated_at
    /// DESC"`); ties, and the default, go by source file and line.
    #[serde(default)]
    pub order_by: Vec<Spanned<String>>,
    /// Referential integrity: the canonical field whose value must exist in `references`.
    pub field: Option<Spanned<String>>,
    /// Referential integrity: where the valid values are.
    pub references: Option<Spanned<ReferenceSpec>>,
    /// Reason template; `{field}` or `{alias.column}` quotes a value of the failing row.
    pub reason: Option<Spanned<String>>,
    /// What a null means: for `check`, a null result; for `unique`, a null key part; for
    /// `references`, a null `field`.
    #[serde(default)]
    pub nulls: NullPolicy,
    /// What happens to a failing row.
    #[serde(default)]
    pub action: RuleAction,
}

/// The rows of one source in a mapping test.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TestRows {
    /// CSV text, header first; the header is line 1.
    Csv(String),
    /// One table per row (`{ faa = "JFK", tzone = "America/New_York" }`); row k is line k+1.
    Rows(Vec<serde_json::Map<String, serde_json::Value>>),
}

/// A row a mapping test expects in the quarantine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedQuarantine {
    /// Line of the driving source's row (CSV text: the header is line 1; rows: row k is
    /// line k+1).
    pub line: i64,
    /// Every rule it fails, in any order.
    pub rules: Vec<String>,
}

/// One `[[test]]` of a mapping: inline source rows and what the mapping must make of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Test name, shown in reports.
    pub name: Spanned<String>,
    /// Free text.
    pub description: Option<String>,
    /// Rows per source the mapping reads.
    pub sources: IndexMap<String, TestRows>,
    /// The canonical rows loaded, in source order; only the fields given are compared
    /// (`"NULL"` expects a null).
    pub expect: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// The rows quarantined; when given, no other row may be quarantined.
    pub quarantined: Option<Vec<ExpectedQuarantine>>,
}

/// Load mode of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Add this run's rows to what is there.
    Append,
    /// Replace the target's contents with this run's rows.
    Overwrite,
    /// Upsert by the model's primary key: insert new keys, update changed rows, and with
    /// `delete_missing` delete rows whose key this run did not read (database targets).
    Merge,
    /// Slowly changing dimension type 2 by the primary key: a changed row closes the current
    /// version (`valid_to`, `is_current = false`) and inserts a new one (database targets).
    Scd2,
}

/// Target format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetFormat {
    /// Apache Parquet files, zstd-compressed.
    Parquet,
    /// A Delta Lake table (Parquet files plus a transaction log, `_delta_log/`), local or on
    /// an object store; one run is one Delta commit.
    Delta,
}

/// `on_schema_change` of a database target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSchemaChange {
    /// Any difference stops the run before a row is read (the default).
    #[default]
    Fail,
    /// Model fields missing from the table are added (`ALTER TABLE ... ADD COLUMN`, nullable);
    /// any other difference still stops the run.
    AddColumns,
}

/// `[schedule]` of a job: when the `sluice schedule` daemon runs it. Jobs without one run
/// only when something calls `sluice run`.
///
/// ```toml
/// schedule = { cron = "0 2 * * *", timezone = "Europe/London" }
/// ```
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A cron expression in the job's time zone: five fields (minute, hour, day of month,
    /// month, day of week), or six with seconds first. Parsed by the `croner` crate.
    pub cron: Spanned<String>,
    /// An IANA time zone name (`"Europe/London"`, `"America/New_York"`); default `"UTC"`.
    /// Fire times follow the zone's daylight-saving changes.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// What the daemon does with fires it missed while it was not running.
    #[serde(default)]
    pub misfire: Misfire,
    /// Consecutive failed fires after which the daemon pauses the job until `sluice resume
    /// JOB` (default 3; 0 never pauses).
    #[serde(default)]
    pub pause_after_failures: Option<u32>,
}

/// What happens to the fires of a schedule that passed while the daemon was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Run once, as soon as the daemon starts, for the latest missed fire (the default: a
    /// nightly load missed during downtime still happens, once).
    #[default]
    RunOnce,
    /// Do not run; wait for the next fire.
    Skip,
}

/// `[retry]` of a job: how a run that failed for a transient reason (a dropped connection, a
/// database shutting down, a serialization failure) is retried. The whole run is retried; its
/// load is all-or-nothing, so a retry never duplicates rows.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Runs in all, the first included (default 1: no retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Wait before the first retry, doubled after each (`"1s"`, default `"2s"`); each wait is
    /// jittered by up to its own length.
    #[serde(default = "default_backoff")]
    pub backoff: Spanned<String>,
    /// Longest wait between attempts (default `"1m"`).
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Spanned<String>,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            attempts: default_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_attempts() -> u32 {
    1
}

fn default_backoff() -> Spanned<String> {
    Spanned::new(0..0, "2s".into())
}

fn default_max_backoff() -> Spanned<String> {
    Spanned::new(0..0, "1m".into())
}

/// The `[quarantine]` of a job.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuarantineSpec {
    /// Where the quarantine is kept (default `<warehouse>/_quarantine/<job>`): a folder
    /// relative to the project, or, for `format = "delta"`, also an object-store URL.
    pub path: Option<Spanned<String>>,
    /// `parquet` (default): a local folder with one `<run_id>.parquet` per run. `delta`: a
    /// Delta table partitioned by `run_id`, one commit per run (see [`crate::quarantine`]).
    pub format: Option<TargetFormat>,
}

/// `[checks.row_count]`: bounds on the number of rows loaded into the target.
#[derive(Debug, Clone, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RowCountSpec {
    /// Fail when fewer rows would be loaded.
    pub fail_below: Option<u64>,
    /// Warn when fewer rows would be loaded.
    pub warn_below: Option<u64>,
    /// Fail when more rows would be loaded.
    pub fail_above: Option<u64>,
    /// Warn when more rows would be loaded.
    pub warn_above: Option<u64>,
}

/// `[checks.quarantine_ratio]`: quarantined rows / rows read, a fraction in 0..=1.
#[derive(Debug, Clone, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRatioSpec {
    /// Fail above this fraction.
    pub fail_above: Option<f64>,
    /// Warn above this fraction.
    pub warn_above: Option<f64>,
}

/// Thresholds on a measured value: `fail_*` is evaluated before `warn_*`; bounds are strict
/// (`fail_above = 0.5` fails at 0.51, passes at 0.5).
#[derive(Debug, Clone, Deserialize, Default, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Fail when the value is below.
    pub fail_below: Option<f64>,
    /// Fail when the value is above.
    pub fail_above: Option<f64>,
    /// Warn when the value is below.
    pub warn_below: Option<f64>,
    /// Warn when the value is above.
    pub warn_above: Option<f64>,
}

/// `[checks.unique]`: duplicate rows of a key among the rows loaded by this run; thresholds
/// are on the number of duplicate rows (rows minus distinct keys), default `fail_above = 0`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UniqueCheckSpec {
    /// Canonical fields forming the key; rows with a null key part are not counted.
    pub key: Vec<String>,
    /// Fail when the value is below.
    pub fail_below: Option<f64>,
    /// Fail when the value is above.
    pub fail_above: Option<f64>,
    /// Warn when the value is below.
    pub warn_below: Option<f64>,
    /// Warn when the value is above.
    pub warn_above: Option<f64>,
}

/// `[checks.freshness]`: hours from the newest value of a timestamp field to the run's start.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessSpec {
    /// A `timestamp` or `date` field of the model.
    pub field: String,
    /// Warn when the newest value is older than this many hours.
    pub warn_after_hours: Option<f64>,
    /// Fail when the newest value is older than this many hours.
    pub fail_after_hours: Option<f64>,
}

/// `[checks.volume]`: rows loaded divided by the median of the rows loaded by the last `runs`
/// committed runs (from the state store); `fail_below = 0.5` fails a run loading fewer than
/// half the usual rows. Passes while there is no history.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// History length (default 7).
    #[serde(default = "default_volume_runs")]
    pub runs: usize,
    /// Fail when the value is below.
    pub fail_below: Option<f64>,
    /// Fail when the value is above.
    pub fail_above: Option<f64>,
    /// Warn when the value is below.
    pub warn_below: Option<f64>,
    /// Warn when the value is above.
    pub warn_above: Option<f64>,
}

fn default_volume_runs() -> usize {
    7
}

/// `[[checks.sql]]`: a custom SQL aggregate over the rows loaded by this run.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheckSpec {
    /// Check name (snake_case), shown in reports and history.
    pub name: String,
    /// An aggregate expression over canonical fields, e.g. `avg(arrival_delay_minutes)`.
    pub expr: Spanned<String>,
    /// Fail when the value is below.
    pub fail_below: Option<f64>,
    /// Fail when the value is above.
    pub fail_above: Option<f64>,
    /// Warn when the value is below.
    pub warn_below: Option<f64>,
    /// Warn when the value is above.
    pub warn_above: Option<f64>,
}

/// `[checks]` of a job.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChecksSpec {
    /// Row count bounds.
    pub row_count: Option<RowCountSpec>,
    /// Quarantine ratio thresholds.
    pub quarantine_ratio: Option<QuarantineRatioSpec>,
    /// Null ratio per field: `[checks.null_ratio] tailnum = { warn_above = 0.01 }`.
    #[serde(default)]
    pub null_ratio: IndexMap<String, Thresholds>,
    /// Key uniqueness among the loaded rows.
    pub unique: Option<UniqueCheckSpec>,
    /// Freshness of a timestamp field.
    pub freshness: Option<FreshnessSpec>,
    /// Volume against the history of committed runs.
    pub volume: Option<VolumeSpec>,
    /// Custom SQL aggregates.
    #[serde(default)]
    pub sql: Vec<SqlCheckSpec>,
}

/// `[defaults]` of the project file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    /// Rows per Arrow record batch (default 8192).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Parallel partitions DataFusion plans with; 0 = number of CPU cores (default).
    #[serde(default)]
    pub target_partitions: usize,
    /// Longest CSV record read whole, in bytes (default 16 MiB); a longer one is quarantined
    /// with its line and first bytes, so one huge field cannot exhaust memory.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Most memory a run's joins, sorts, aggregations and `unique` rules may hold at once; past
    /// it, the operators that can spill to disk do (`None`: no limit). A job's own
    /// `memory_limit` replaces it.
    #[serde(default)]
    pub memory_limit: Option<MemoryLimit>,
    /// Folder for spill files, relative to the project root (`None`: the system's temporary
    /// folder, `$TMPDIR` or `/tmp`).
    #[serde(default)]
    pub spill_dir: Option<String>,
}

/// A memory size as written in a config file, a string: `"2GiB"`, `"512 MiB"`, `"1.5GB"`. IEC
/// units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024, SI units (`KB`, `MB`, `GB`, `TB`, and
/// `K`, `M`, `G`, `T`) powers of 1000, as the `bytesize` crate parses them; a string of digits
/// alone is bytes. At least [`MemoryLimit::MIN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit(u64);

impl MemoryLimit {
    /// The smallest limit accepted: 1 MiB. Below it not even one batch of a join or a sort
    /// fits, so every run would fail.
    pub const MIN: u64 = 1 << 20;

    /// Parses `text` (see [`MemoryLimit`]).
    ///
    /// # Errors
    /// [`InvalidValue`] naming the text when it is not a size or is below [`MemoryLimit::MIN`].
    pub fn parse(text: &str) -> std::result::Result<MemoryLimit, InvalidValue> {
        let hint = "write a number and a unit, as `512MiB` or `2GiB`";
        let size: bytesize::ByteSize = text
            .trim()
            .parse()
            .map_err(|_| invalid!("`{text}` is not a memory size: {hint}"))?;
        if size.as_u64() < Self::MIN {
            return Err(invalid!(
                "`{text}` is below the smallest memory limit, 1 MiB: {hint}"
            ));
        }
        Ok(MemoryLimit(size.as_u64()))
    }

    /// The limit in bytes.
    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for MemoryLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        MemoryLimit::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Default for DefaultsSpec {
    fn default() -> Self {
        DefaultsSpec {
            batch_size: default_batch_size(),
            target_partitions: 0,
            max_record_bytes: default_max_record_bytes(),
            memory_limit: None,
            spill_dir: None,
        }
    }
}

fn default_max_record_bytes() -> usize {
    crate::record_limit::DEFAULT_MAX_RECORD_BYTES
}

fn default_batch_size() -> usize {
    8192
}

/// Kind of a named connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
    /// SQLite file.
    Sqlite,
}

/// Kind of an object-store connection (`[connections.<name>] kind = "s3"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Amazon S3 or any S3-compatible service (MinIO, Ceph, Garage, R2, moto…).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage / ADLS Gen2.
    Azure,
}

impl StoreKind {
    /// The URL scheme of this store's locations: `s3`, `gs` or `az`.
    pub fn scheme(self) -> &'static str {
        match self {
            StoreKind::S3 => "s3",
            StoreKind::Gcs => "gs",
            StoreKind::Azure => "az",
        }
    }
}

/// URL schemes of object-store locations, as [`StoreKind::scheme`] gives them.
pub const SCHEMES: [&str; 3] = ["s3", "gs", "az"];

/// True when `path` is an object-store URL (`s3://…`, `gs://…`, `az://…`), not a local path.
pub fn is_url(path: &str) -> bool {
    SCHEMES.iter().any(|s| {
        path.len() > s.len() + 3 && path.starts_with(s) && path[s.len()..].starts_with("://")
    })
}

/// One `[connections.<name>]` whose `kind` is an object store: the settings used for every
/// location in its bucket (`s3://<bucket>/…`, `gs://<bucket>/…`, `az://<container>/…`).
///
/// ```toml
/// [connections.lake]
/// kind = "s3"
/// bucket = "lake"
/// endpoint = "http://127.0.0.1:9000"   # any S3-compatible service; omit for AWS
/// region = "us-east-1"
/// path_style = true
/// access_key_id = "${env:LAKE_KEY_ID}"
/// secret_access_key = "${env:LAKE_SECRET}"
/// ```
///
/// Credentials are only ever references (`${env:NAME}`, `${file:PATH}`); without them the
/// provider's standard chain is used (`AWS_*` variables, profile, instance metadata; for GCS
/// `GOOGLE_*`; for Azure `AZURE_*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSpec {
    /// `s3`, `gcs` or `azure`.
    pub kind: StoreKind,
    /// Bucket (S3, GCS) or container (Azure).
    pub bucket: Spanned<String>,
    /// S3: region (default `us-east-1`, or `AWS_REGION`).
    pub region: Option<String>,
    /// Service URL, for S3-compatible services and emulators (`http://127.0.0.1:9000`).
    pub endpoint: Option<Spanned<String>>,
    /// S3: path-style addressing (`endpoint/bucket/key`) instead of virtual hosts
    /// (`bucket.endpoint/key`); most S3-compatible services need it.
    #[serde(default)]
    pub path_style: bool,
    /// S3: access key id, by reference.
    pub access_key_id: Option<Spanned<String>>,
    /// S3: secret access key, by reference.
    pub secret_access_key: Option<Spanned<String>>,
    /// S3: session token of temporary credentials, by reference.
    pub session_token: Option<Spanned<String>>,
    /// Azure: storage account name.
    pub account: Option<Spanned<String>>,
    /// Azure: storage account access key, by reference.
    pub access_key: Option<Spanned<String>>,
    /// GCS: service account key (JSON), by reference (usually `${file:…}`).
    pub service_account_key: Option<Spanned<String>>,
}

impl StoreSpec {
    /// The credential keys given, with their values as written (references).
    pub fn secrets(&self) -> Vec<(&'static str, &Spanned<String>)> {
        [
            ("access_key_id", &self.access_key_id),
            ("secret_access_key", &self.secret_access_key),
            ("session_token", &self.session_token),
            ("access_key", &self.access_key),
            ("service_account_key", &self.service_account_key),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect()
    }
}

/// `sslmode` of a connection (PostgreSQL's names; MySQL maps them to its `ssl-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain TCP (the default, as libpq's).
    #[default]
    Prefer,
    /// TLS, without checking the server's certificate.
    Require,
    /// TLS; the certificate must be signed by `ca_file` (or a system root) and name the host.
    VerifyFull,
}

/// One `[connections.<name>]` of the project file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// Database kind.
    pub kind: ConnectionKind,
    /// Connection URL (`postgres://user:${env:PGPASSWORD}@host:5432/db`,
    /// `mysql://user@host:3306/db`, or a SQLite file path); secrets only through
    /// `${env:NAME}` or `${file:PATH}`.
    pub url: Spanned<String>,
    /// TLS: `disable`, `prefer` (default), `require` or `verify-full`.
    pub sslmode: Option<SslMode>,
    /// TLS: PEM file of the certificate authority to trust (with `verify-full`), relative to
    /// the project root.
    pub ca_file: Option<Spanned<String>>,
    /// Longest wait for a connection (`"10s"`, the default).
    pub connect_timeout: Option<Spanned<String>>,
    /// Longest a single statement may run (default: no limit), set on the session.
    pub statement_timeout: Option<Spanned<String>>,
    /// Most connections one run opens to this database at a time (default 4).
    pub pool_size: Option<u32>,
}

/// `[server]` of the project file: the HTTP server of `sluice schedule` (health, metrics and
/// the API). Without it the daemon serves nothing.
///
/// ```toml
/// [server]
/// listen = "127.0.0.1:8080"
/// [server.tokens.airflow]
/// sha256 = "…"              # sluice token hash < token.txt
/// requests_per_minute = 60
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// Socket address to listen on (`"127.0.0.1:8080"`; `"0.0.0.0:8080"` for every interface).
    pub listen: Spanned<String>,
    /// Largest request body accepted, in bytes (default 65536); larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// API tokens by name. Without any, the API answers 401 to every request (health and
    /// metrics stay open).
    #[serde(default)]
    pub tokens: std::collections::BTreeMap<String, TokenSpec>,
    /// PEM certificate chain (relative to the project root): with `tls_key`, the server
    /// speaks HTTPS only.
    #[serde(default)]
    pub tls_cert: Option<Spanned<String>>,
    /// PEM PKCS#8 private key of `tls_cert`, unencrypted.
    #[serde(default)]
    pub tls_key: Option<Spanned<String>>,
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

/// One API bearer token, stored as the SHA-256 of its text, never the text itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Lowercase hex SHA-256 of the token (64 characters), as `sluice token hash` prints it.
    pub sha256: Spanned<String>,
    /// Requests per minute this token may make (default 60); beyond it the API answers 429
    /// with `Retry-After`.
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute: u32,
}

fn default_requests_per_minute() -> u32 {
    60
}

/// `[retention]` of the project file: durations (`"90d"`); a key left out keeps forever.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    /// Run report files.
    pub run_reports: Option<Spanned<String>>,
    /// Quarantine files.
    pub quarantine: Option<Spanned<String>>,
    /// History rows in the state store.
    pub history: Option<Spanned<String>>,
}

/// `[alerts]` of the project file: where the daemon sends notifications.
///
/// ```toml
/// [alerts]
/// webhook = "https://hooks.example.com/sluice/${env:HOOK_TOKEN}"
/// on = ["run_failed", "check_failed", "circuit_opened"]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSpec {
    /// URL that receives each alert as a JSON POST; secrets only through `${env:NAME}` or
    /// `${file:PATH}`.
    pub webhook: Spanned<String>,
    /// Which events are sent (default: all of them).
    #[serde(default = "AlertEvent::all")]
    pub on: Vec<AlertEvent>,
}

/// `[state]` of the project file: where the state store lives when it is not the SQLite file
/// in `state_dir`.
///
/// ```toml
/// [state]
/// url = "postgres://sluice:${env:SLUICE_STATE_PASSWORD}@db.internal:5432/sluice_state"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    /// A PostgreSQL URL (`postgres://` or `postgresql://`); secrets only through
    /// `${env:NAME}` or `${file:PATH}`.
    pub url: Spanned<String>,
}

/// An event that raises an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// A run ended with status `failed` (after its retries).
    RunFailed,
    /// A dataset check failed: the run did not commit.
    CheckFailed,
    /// A dataset check warned: the run committed.
    CheckWarned,
    /// A scheduled job was paused after consecutive failed fires.
    CircuitOpened,
}

impl AlertEvent {
    /// Every event.
    pub fn all() -> Vec<AlertEvent> {
        vec![
            AlertEvent::RunFailed,
            AlertEvent::CheckFailed,
            AlertEvent::CheckWarned,
            AlertEvent::CircuitOpened,
        ]
    }
}

/// Map of named entries in declaration order.
pub type Entries<T> = IndexMap<String, T>;

/// The thresholds of a check spec with the four usual keys.
pub trait HasThresholds {
    /// The thresholds.
    fn thresholds(&self) -> Thresholds;
}

macro_rules! has_thresholds {
    ($($t:ty),*) => {$(
        impl HasThresholds for $t {
            fn thresholds(&self) -> Thresholds {
                Thresholds {
                    fail_below: self.fail_below,
                    fail_above: self.fail_above,
                    warn_below: self.warn_below,
                    warn_above: self.warn_above,
                }
            }
        }
    )*};
}
has_thresholds!(UniqueCheckSpec, VolumeSpec, SqlCheckSpec);

/// The name a unit enum has in TOML (`overwrite`, `csv`), for messages.
pub fn json_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
