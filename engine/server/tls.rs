//! HTTPS for the daemon's server when `[server] tls_cert` and `tls_key` are set: each accepted
//! connection is wrapped in TLS (`native-tls`, the system's OpenSSL, as the database drivers
//! use) and served by hyper's HTTP/1.1 with the same router as plain HTTP.

use std::path::Path;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

use crate::error::{Error, Result};

/// The acceptor for a PEM certificate chain and a PEM PKCS#8 private key.
///
/// # Errors
/// [`Error::Usage`] naming the file that cannot be read or the pair that does not load.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_native_tls::TlsAcceptor> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| Error::Usage {
            message: format!("cannot read [server] {what} {}: {e}", p.display()),
            hint: Some("give the path of a PEM file, relative to the project root".into()),
        })
    };
    let identity = native_tls::Identity::from_pkcs8(&read(cert, "tls_cert")?, &read(key, "tls_key")?)
        .map_err(|e| Error::Usage {
            message: format!(
                "[server] tls_cert {} and tls_key {} do not load as a certificate and its key: {e}",
                cert.display(),
                key.display()
            ),
            hint: Some("tls_key must be an unencrypted PKCS#8 PEM key (`-----BEGIN PRIVATE KEY-----`); `openssl pkcs8 -topk8 -nocrypt` converts one".into()),
        })?;
    let acceptor = native_tls::TlsAcceptor::new(identity).map_err(|e| Error::Usage {
        message: format!("cannot set up TLS: {e}"),
        hint: None,
    })?;
    Ok(tokio_native_tls::TlsAcceptor::from(acceptor))
}

/// Serves `router` over TLS on `listener` until `shutdown` completes; connections in progress
/// then finish on their own. A handshake that fails is dropped (and logged at debug level).
pub async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_native_tls::TlsAcceptor,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(target: "sluice::daemon", "accept: {e}");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let (acceptor, service) = (acceptor.clone(), TowerToHyperService::new(router.clone()));
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(target: "sluice::daemon", "TLS handshake with {peer}: {e}");
                    return;
                }
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
