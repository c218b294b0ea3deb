//! What every PostgreSQL client in Sluice shares, below the database connectors and the state
//! store: error messages, and a plain connection for the state store.

/// The error's text: the server's message with its detail and hint, or the client's.
pub fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                let t = inner.to_string();
                if !s.contains(&t) {
                    s.push_str(&format!(": {t}"));
                }
                src = inner.source();
            }
            s
        }
    }
}

/// Why [`connect_prefer`] could not connect: a URL it cannot parse, TLS that cannot be set
/// up, or the server's or the network's refusal, as [`message`] words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

/// Connects to `url` with TLS when the server offers it, without verifying its certificate
/// (libpq's `sslmode=prefer`), giving up after `timeout`; the connection is driven by a task
/// spawned on the current runtime.
///
/// # Errors
/// [`ConnectError`] with [`message`] of the failure.
pub async fn connect_prefer(
    url: &str,
    timeout: std::time::Duration,
    application_name: &str,
) -> Result<tokio_postgres::Client, ConnectError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| ConnectError(message(&e)))?;
    config.connect_timeout(timeout);
    // A server that vanished (a failover, a cut network) is noticed within a minute.
    config.keepalives(true);
    config.keepalives_idle(std::time::Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    let tls = native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .danger_accept_invalid_hostnames(true)
        .build()
        .map_err(|e| ConnectError(format!("setting up TLS: {e}")))?;
    let (client, connection) = config
        .connect(postgres_native_tls::MakeTlsConnector::new(tls))
        .await
        .map_err(|e| ConnectError(message(&e)))?;
    tokio::spawn(connection);
    Ok(client)
}
