//! The daemon's HTTP server (axum): `/health`, `/metrics`, `/openapi.json` and the API under
//! `/api/v1` (bearer tokens, per-token rate limits, a request size limit, errors as RFC 9457
//! problem details). It reads the state store and the project files itself, and asks the
//! scheduler loop for everything that starts or changes runs ([`Command`]), so the loop
//! stays the one place that decides what runs.
//!
//! ```text
//! client ──HTTP──▶ router ──/api: auth (token hash) ─▶ rate limit ─▶ handler
//!                                        handler ──read──▶ state store, project files
//!                                        handler ──Command──▶ scheduler loop ──reply──▶ 202 / 409 / 404
//! ```

mod api;
mod auth;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::spec::ServerSpec;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::state::TriggerRecord;

pub use api::ApiDoc;
pub use auth::token_hash;

/// What the HTTP server asks of the scheduler loop.
#[derive(Debug)]
pub enum Command {
    /// Run `job` now, on behalf of the token named `requested_by`.
    Trigger {
        /// The job.
        job: String,
        /// The API token's name.
        requested_by: String,
        /// The run's logical date as given (`YYYY-MM-DD` or RFC 3339); `None`: now.
        date: Option<String>,
        /// Values for the job's `[vars]`.
        vars: std::collections::BTreeMap<String, String>,
        /// The queued trigger, or why not.
        reply: oneshot::Sender<std::result::Result<TriggerRecord, Refused>>,
    },
    /// Close `job`'s circuit so its fires run again.
    Resume {
        /// The job.
        job: String,
        /// Whether it was paused, or why it could not be resumed.
        reply: oneshot::Sender<std::result::Result<bool, Refused>>,
    },
}

/// Why the scheduler loop refused a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No job of that name loads.
    UnknownJob(String),
    /// A run of the job is in progress (runs of a job never overlap).
    Running(String),
    /// The daemon is stopping.
    Stopping,
    /// The state store cannot record it.
    State(String),
    /// The request's date or vars are not valid for the job.
    Invalid(String),
}

/// What the scheduler loop and the server share.
pub struct Shared {
    /// The project root.
    pub root: PathBuf,
    /// The state folder (run reports, locks; the store itself unless `state_url`).
    pub state_dir: PathBuf,
    /// `[state] url` as written: the store is this PostgreSQL database.
    pub state_url: Option<String>,
    /// The daemon's metrics.
    pub metrics: Metrics,
    /// Unix time in milliseconds the scheduler loop last woke.
    last_tick_ms: AtomicI64,
    /// After how long without a tick `/health` reports the loop stalled.
    pub stall_after: Duration,
    /// Where commands for the loop go.
    pub commands: mpsc::Sender<Command>,
}

impl Shared {
    /// The shared state, and the receiving end of the command channel (for the loop).
    pub fn new(
        root: PathBuf,
        state_dir: PathBuf,
        state_url: Option<String>,
        stall_after: Duration,
    ) -> (Arc<Shared>, mpsc::Receiver<Command>) {
        let (commands, receiver) = mpsc::channel(64);
        let shared = Shared {
            root,
            state_dir,
            state_url,
            metrics: Metrics::new(),
            last_tick_ms: AtomicI64::new(chrono::Utc::now().timestamp_millis()),
            stall_after,
            commands,
        };
        (Arc::new(shared), receiver)
    }

    /// Opens the state store.
    ///
    /// # Errors
    /// As [`StateStore::of`](crate::state::StateStore::of).
    pub fn store(&self) -> crate::error::Result<crate::state::StateStore> {
        match &self.state_url {
            Some(url) => crate::state::StateStore::open_url(url, &self.root),
            None => crate::state::StateStore::open(&self.state_dir),
        }
    }

    /// Records that the scheduler loop woke at `now`.
    pub fn tick(&self, now: chrono::DateTime<chrono::Utc>) {
        self.last_tick_ms
            .store(now.timestamp_millis(), Ordering::Relaxed);
        self.metrics.tick(now);
    }

    /// How long ago the scheduler loop last woke.
    pub fn since_tick(&self) -> Duration {
        let ms = chrono::Utc::now().timestamp_millis() - self.last_tick_ms.load(Ordering::Relaxed);
        Duration::from_millis(ms.max(0) as u64)
    }
}

/// An error answer: an RFC 9457 problem details object, `application/problem+json`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `about:blank`: the status code says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status code's reason phrase (`Not Found`).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, and what to do about it.
    pub detail: String,
}

impl Problem {
    /// A problem with `status` and `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            Json(self),
        )
            .into_response()
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// The router: open routes and the authenticated API.
pub fn router(shared: Arc<Shared>, spec: &ServerSpec) -> Router {
    let auth = Arc::new(auth::Tokens::new(&spec.tokens));
    Router::new()
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(api::openapi))
        .nest("/api/v1", api::routes(auth, spec.max_body_bytes))
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; /openapi.json lists them",
            )
        })
        .with_state(shared)
}

/// Binds `spec.listen`, before the daemon takes any fire, so a port in use stops the start.
///
/// # Errors
/// [`Error::Usage`] when the address cannot be bound.
pub async fn bind(spec: &ServerSpec) -> Result<tokio::net::TcpListener> {
    let addr: SocketAddr = spec.listen.get_ref().parse().map_err(|_| Error::Usage {
        message: format!(
            "[server] listen = \"{}\" is not a socket address",
            spec.listen.get_ref()
        ),
        hint: Some("write an IP address and a port, such as \"127.0.0.1:8080\"".into()),
    })?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Usage {
            message: format!("cannot listen on {addr}: {e}"),
            hint: Some("another process may use the port: change [server] listen in sluice.toml, or pass --listen".into()),
        })
}

/// Serves `router` on `listener` until `shutdown` completes.
///
/// # Errors
/// [`Error::Internal`] when the server stops on an I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Internal(format!("HTTP server: {e}")))
}
