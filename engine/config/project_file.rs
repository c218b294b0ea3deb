//! `sluice.toml`: the project settings (warehouse and state folders, defaults, connections),
//! read with every mistake reported.

use super::*;

pub(super) fn default_settings(root: &Path) -> ProjectSettings {
    ProjectSettings {
        name: root
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("sluice")
            .to_string(),
        warehouse: PathBuf::from("warehouse"),
        state_dir: PathBuf::from(".sluice"),
        state_url: None,
        defaults: DefaultsSpec::default(),
        connections: BTreeMap::new(),
        stores: BTreeMap::new(),
        server: None,
        alerts: None,
        retention: RetentionPolicy::default(),
    }
}

pub(super) fn load_project_file(root: &Path, diags: &mut Diagnostics) -> Option<ProjectSettings> {
    let src = read_source(root, &root.join(PROJECT_FILE), diags)?;
    parse_project(&src, diags)
}

pub(super) const PROJECT_KEYS: &[&str] = &[
    "name",
    "warehouse",
    "state_dir",
    "state",
    "defaults",
    "connections",
    "server",
    "alerts",
    "retention",
];

pub(super) fn parse_project(src: &SourceText, diags: &mut Diagnostics) -> Option<ProjectSettings> {
    let mut r = Reader::new(src, diags);
    let table = r.parse()?;
    let mut s = default_settings(Path::new(""));
    s.name = String::new();
    for (key, item) in table.iter() {
        match key {
            "name" => s.name = r.entry::<String>(key, item).unwrap_or_default(),
            "warehouse" | "state_dir" => {
                let Some(p) = r.entry::<String>(key, item) else {
                    continue;
                };
                match interpolate::resolve_with(&p, &|n| std::env::var(n).ok(), &|_| {
                    Err("a folder is not read from a file; use `${env:NAME}`".into())
                }) {
                    Ok(v) if key == "warehouse" => s.warehouse = PathBuf::from(v.value),
                    Ok(v) => s.state_dir = PathBuf::from(v.value),
                    Err(e) => r.error(
                        Reader::key_span(&table, key),
                        key,
                        format!("cannot resolve `{key}`: {e}"),
                        Some("set the variable in the environment that runs sluice, or write the folder without it".into()),
                    ),
                }
            }
            "defaults" => {
                if let Some(d) = r.entry::<DefaultsSpec>(key, item) {
                    validate_defaults(&mut r, item, &d);
                    s.defaults = d
                }
            }
            "connections" => {
                for (name, c, _) in entries::<StoreSpec>(&mut r, &store_entries(&table), key) {
                    validate_store(&mut r, &name, &c);
                    s.stores.insert(name, c);
                }
                for (name, c, _) in
                    entries::<ConnectionSpec>(&mut r, &database_entries(&table), key)
                {
                    if let Some(p) = interpolate::plaintext_password(c.url.get_ref()) {
                        plaintext_secret(
                            &mut r,
                            c.url.span(),
                            &format!("connections.{name}.url"),
                            "password written in plain text",
                            p,
                            None,
                        );
                    }
                    validate_connection(&mut r, &name, &c);
                    s.connections.insert(name, c);
                }
            }
            "state" => {
                if let Some(spec) = r.entry::<StateSpec>(key, item) {
                    s.state_url = validate_state(&mut r, &spec);
                }
            }
            "server" => {
                if let Some(spec) = r.entry::<ServerSpec>(key, item) {
                    validate_server(&mut r, &spec);
                    s.server = Some(spec);
                }
            }
            "alerts" => {
                if let Some(spec) = r.entry::<AlertsSpec>(key, item) {
                    validate_alerts(&mut r, &spec);
                    s.alerts = Some(spec);
                }
            }
            "retention" => {
                if let Some(spec) = r.entry::<RetentionSpec>(key, item) {
                    s.retention = validate_retention(&mut r, &spec);
                }
            }
            other => r.unknown_key(&table, other, "", PROJECT_KEYS),
        }
    }
    if s.name.is_empty() {
        r.missing_key(
            None,
            "",
            "name",
            "add `name = \"my_project\"` at the top of sluice.toml",
        );
    }
    Some(s)
}

/// Checks `[state]`: a PostgreSQL URL with no password written in plain text.
fn validate_state(r: &mut Reader<'_>, spec: &StateSpec) -> Option<String> {
    let url = spec.url.get_ref();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        r.error(
            Some(spec.url.span()),
            "state.url",
            "the state store can be a PostgreSQL database (`postgres://...`); leave `[state]` out for the SQLite file in `state_dir`",
            Some("url = \"postgres://sluice:${env:SLUICE_STATE_PASSWORD}@db:5432/sluice_state\"".into()),
        );
        return None;
    }
    if let Some(p) = interpolate::plaintext_password(url) {
        plaintext_secret(
            r,
            spec.url.span(),
            "state.url",
            "password written in plain text",
            p,
            None,
        );
        return None;
    }
    Some(url.clone())
}

/// Checks `[server]`: an address that parses, tokens that are SHA-256 digests in hex, rate
/// limits of at least one request a minute.
fn validate_server(r: &mut Reader<'_>, spec: &ServerSpec) {
    match (&spec.tls_cert, &spec.tls_key) {
        (Some(given), None) | (None, Some(given)) => r.error(
            Some(given.span()),
            if spec.tls_cert.is_some() { "server.tls_cert" } else { "server.tls_key" },
            "HTTPS needs both `tls_cert` and `tls_key`",
            Some("add the other one (PEM files, relative to the project root), or remove this one to serve plain HTTP".into()),
        ),
        _ => {}
    }
    if spec
        .listen
        .get_ref()
        .parse::<std::net::SocketAddr>()
        .is_err()
    {
        r.error(
            Some(spec.listen.span()),
            "server.listen",
            format!("`{}` is not a socket address", spec.listen.get_ref()),
            Some("write an IP address and a port: \"127.0.0.1:8080\", or \"0.0.0.0:8080\" for every interface".into()),
        );
    }
    for (name, token) in &spec.tokens {
        let digest = token.sha256.get_ref();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            r.error(
                Some(token.sha256.span()),
                &format!("server.tokens.{name}.sha256"),
                "not a SHA-256 digest: 64 hexadecimal characters",
                Some("store the token's hash, never the token: `sluice token hash < token.txt` prints it".into()),
            );
        }
        if token.requests_per_minute == 0 {
            r.error(
                Some(token.sha256.span()),
                &format!("server.tokens.{name}.requests_per_minute"),
                "`requests_per_minute` must be at least 1",
                Some("remove the token to revoke it".into()),
            );
        }
    }
}

/// Parses `[retention]`'s durations; one that does not parse is an error at its value (and
/// keeps forever).
fn validate_retention(r: &mut Reader<'_>, spec: &RetentionSpec) -> RetentionPolicy {
    let mut duration = |key: &str, v: &Option<Spanned<String>>| {
        let v = v.as_ref()?;
        match parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                r.error(
                    Some(v.span()),
                    &format!("retention.{key}"),
                    "a retention of 0 would delete everything at once",
                    Some(
                        "leave the key out to keep forever, or write a duration such as \"90d\""
                            .into(),
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                r.error(
                    Some(v.span()),
                    &format!("retention.{key}"),
                    e,
                    Some(DURATION_HINT.into()),
                );
                None
            }
        }
    };
    RetentionPolicy {
        run_reports: duration("run_reports", &spec.run_reports),
        quarantine: duration("quarantine", &spec.quarantine),
        history: duration("history", &spec.history),
    }
}

/// Checks `[alerts]`: an http(s) URL whose secrets come by reference.
fn validate_alerts(r: &mut Reader<'_>, spec: &AlertsSpec) {
    let url = spec.webhook.get_ref();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        r.error(
            Some(spec.webhook.span()),
            "alerts.webhook",
            format!("`{url}` is not an http:// or https:// URL"),
            Some("alerts are JSON POSTs to a webhook URL".into()),
        );
    }
    if let Some(p) = interpolate::plaintext_password(url) {
        plaintext_secret(
            r,
            spec.webhook.span(),
            "alerts.webhook",
            "password written in plain text",
            p,
            None,
        );
    }
}

/// Largest `[defaults] batch_size`: 2^20 rows. Beyond it a batch's buffers grow past what
/// DataFusion's operators are tuned for, with no gain in speed.
pub const MAX_BATCH_SIZE: usize = 1 << 20;

/// Bounds of `[defaults] max_record_bytes`: 1 KiB to 1 GiB.
pub const MAX_RECORD_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=1 << 30;

pub(super) fn validate_defaults(r: &mut Reader<'_>, item: &toml_edit::Item, d: &DefaultsSpec) {
    let span = |key: &str| {
        item.as_table_like()
            .and_then(|t| t.get(key))
            .and_then(toml_edit::Item::span)
    };
    if !(1..=MAX_BATCH_SIZE).contains(&d.batch_size) {
        r.error(
            span("batch_size"),
            "defaults.batch_size",
            format!(
                "batch_size = {} is outside 1..={MAX_BATCH_SIZE}",
                d.batch_size
            ),
            Some("rows per Arrow batch; the default, 8192, suits most loads".into()),
        );
    }
    if !MAX_RECORD_BYTES_RANGE.contains(&d.max_record_bytes) {
        r.error(
            span("max_record_bytes"),
            "defaults.max_record_bytes",
            format!(
                "max_record_bytes = {} is outside {}..={}",
                d.max_record_bytes,
                MAX_RECORD_BYTES_RANGE.start(),
                MAX_RECORD_BYTES_RANGE.end()
            ),
            Some(
                "the longest CSV record read whole, in bytes; the default is 16777216 (16 MiB)"
                    .into(),
            ),
        );
    }
}

/// Whether a `[connections.<name>]` entry is an object store (its `kind` is one).
fn is_store_entry(entry: &Item) -> bool {
    let kind = entry
        .as_table_like()
        .and_then(|t| t.get("kind"))
        .and_then(Item::as_str);
    matches!(kind, Some("s3" | "gcs" | "azure"))
}

/// The project table with only the object-store entries of `[connections]`.
fn store_entries(table: &Table) -> Table {
    connections_where(table, true)
}

/// The project table with only the database entries of `[connections]`.
fn database_entries(table: &Table) -> Table {
    connections_where(table, false)
}

fn connections_where(table: &Table, stores: bool) -> Table {
    let mut out = table.clone();
    if let Some(conns) = out.get_mut("connections").and_then(Item::as_table_like_mut) {
        let others: Vec<String> = conns
            .iter()
            .filter(|(_, entry)| is_store_entry(entry) != stores)
            .map(|(k, _)| k.to_string())
            .collect();
        for k in others {
            conns.remove(&k);
        }
    }
    out
}

/// Reports `secret`, written in plain text at `span` (key `key`), with the hint to write it by
/// reference; the line shown under the error has the secret masked (`***`), so a value
/// written by mistake is not printed again into a terminal or a CI log.
fn plaintext_secret(
    r: &mut Reader<'_>,
    span: Range<usize>,
    key: &str,
    message: &str,
    secret: &str,
    alternative: Option<&str>,
) {
    let mut d = r.src.diagnostic(Some(span), key, message);
    let hint = "write it as `${env:NAME}` or `${file:PATH}` and keep the value out of the project";
    d.hint = Some(match alternative {
        Some(a) => format!("{hint}; or {a}"),
        None => hint.to_string(),
    });
    if let Some(line) = d.source_line.as_mut().filter(|_| !secret.is_empty()) {
        *line = line.replace(secret, "***");
    }
    r.push(d);
}

/// An object-store connection: credentials only by reference, an endpoint that is a URL.
pub(super) fn validate_store(r: &mut Reader<'_>, name: &str, c: &StoreSpec) {
    let path = format!("connections.{name}");
    for (key, v) in c.secrets() {
        if !interpolate::is_reference(v.get_ref()) {
            plaintext_secret(
                r,
                v.span(),
                &format!("{path}.{key}"),
                "credential written in plain text",
                v.get_ref(),
                Some("leave it out to use the provider's standard credential chain"),
            );
        }
    }
    if let Some(e) = &c.endpoint {
        if !(e.get_ref().starts_with("http://") || e.get_ref().starts_with("https://")) {
            r.error(
                Some(e.span()),
                &format!("{path}.endpoint"),
                format!("`{}` is not an http:// or https:// URL", e.get_ref()),
                Some("write the service's URL, e.g. `endpoint = \"http://127.0.0.1:9000\"`".into()),
            );
        }
    }
    let kind = crate::config::spec::json_name(&c.kind);
    let set = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span);
    /// A key, where it is written (if it is), and the kinds it applies to.
    type KindKey<'a> = (&'a str, Option<Range<usize>>, &'a [StoreKind]);
    let keys: [KindKey<'_>; 8] = [
        (
            "endpoint",
            set(&c.endpoint),
            &[StoreKind::S3, StoreKind::Azure],
        ),
        ("access_key_id", set(&c.access_key_id), &[StoreKind::S3]),
        (
            "secret_access_key",
            set(&c.secret_access_key),
            &[StoreKind::S3],
        ),
        ("session_token", set(&c.session_token), &[StoreKind::S3]),
        ("account", set(&c.account), &[StoreKind::Azure]),
        ("access_key", set(&c.access_key), &[StoreKind::Azure]),
        (
            "service_account_key",
            set(&c.service_account_key),
            &[StoreKind::Gcs],
        ),
        (
            "path_style",
            c.path_style.then(|| c.bucket.span()),
            &[StoreKind::S3],
        ),
    ];
    for (key, span, kinds) in keys {
        if let Some(span) = span.filter(|_| !kinds.contains(&c.kind)) {
            r.error(
                Some(span),
                &format!("{path}.{key}"),
                format!("`{key}` does not apply to a `{kind}` connection"),
                Some("remove it (see docs/reference.md, \"Object-store connections\", for each kind's keys)".into()),
            );
        }
    }
    if c.region.is_some() && c.kind != StoreKind::S3 {
        r.error(
            Some(c.bucket.span()),
            &format!("{path}.region"),
            format!("`region` does not apply to a `{kind}` connection"),
            Some("remove it".into()),
        );
    }
    let b = c.bucket.get_ref();
    if b.is_empty() || b.contains(['/', ':']) {
        r.error(
            Some(c.bucket.span()),
            &format!("{path}.bucket"),
            format!("`{b}` is not a bucket name"),
            Some(
                "write the bucket (or Azure container) name alone, without `s3://` or a path"
                    .into(),
            ),
        );
    }
}

pub(super) fn validate_connection(r: &mut Reader<'_>, name: &str, c: &ConnectionSpec) {
    let path = format!("connections.{name}");
    for (key, v) in [
        ("connect_timeout", &c.connect_timeout),
        ("statement_timeout", &c.statement_timeout),
    ] {
        if let Some(v) = v {
            if let Err(e) = parse_duration(v.get_ref()) {
                r.error(
                    Some(v.span()),
                    &format!("{path}.{key}"),
                    e,
                    Some(DURATION_HINT.into()),
                );
            }
        }
    }
    if c.pool_size == Some(0) {
        r.error(
            Some(c.url.span()),
            &format!("{path}.pool_size"),
            "`pool_size` must be at least 1",
            None,
        );
    }
    let tls_given = c.sslmode.is_some() || c.ca_file.is_some();
    if c.kind == ConnectionKind::Sqlite && tls_given {
        r.error(
            Some(c.url.span()),
            &format!("{path}.sslmode"),
            "a SQLite connection is a local file: `sslmode` and `ca_file` do not apply",
            Some("remove them".into()),
        );
    }
    if let (Some(ca), Some(mode)) = (&c.ca_file, c.sslmode) {
        if mode != SslMode::VerifyFull {
            r.error(
                Some(ca.span()),
                &format!("{path}.ca_file"),
                "`ca_file` is only used to verify the server's certificate",
                Some("set `sslmode = \"verify-full\"`, or remove `ca_file`".into()),
            );
        }
    }
}
