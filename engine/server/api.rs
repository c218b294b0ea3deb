//! The handlers, and the OpenAPI document generated from them (`utoipa`), served at
//! `/openapi.json`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Extension, Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::auth::{self, Caller, Tokens};
use super::{Command, Problem, Refused, Shared};
use crate::config::Project;
use crate::state::{RunRecord, TriggerRecord};
use crate::status::JobStatus;

type Api<T> = std::result::Result<T, Problem>;

/// The OpenAPI 3.1 document of the daemon's HTTP server.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice daemon",
        description = "Health, metrics and the API of `sluice schedule`. API calls need `Authorization: Bearer <token>` (tokens in [server.tokens] of sluice.toml); errors are RFC 9457 problem details."
    ),
    paths(health, metrics, openapi, list_jobs, trigger, resume, get_trigger, list_runs, get_run),
    components(schemas(Health, JobStatus, RunRecord, TriggerRecord, TriggerBody, Resumed, Problem)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API routes, behind the token check and the body size limit.
pub(super) fn routes(tokens: Arc<Tokens>, max_body_bytes: usize) -> Router<Arc<Shared>> {
    Router::new()
        .route("/jobs", get(list_jobs))
        .route("/jobs/{job}/runs", post(trigger))
        .route("/jobs/{job}/resume", post(resume))
        .route("/triggers/{trigger_id}", get(get_trigger))
        .route("/runs", get(list_runs))
        .route("/runs/{run_id}", get(get_run))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::map_response(plain_errors_as_problems))
        .layer(middleware::from_fn_with_state(tokens, auth::authenticate))
}

/// Turns axum's own plain-text rejections (a body too large, malformed JSON, a wrong method)
/// into problem details, so every error of the API has one shape.
async fn plain_errors_as_problems(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than [server] max_body_bytes",
        StatusCode::METHOD_NOT_ALLOWED => {
            "this endpoint does not take that method; /openapi.json lists them"
        }
        _ => "the request was not understood; /openapi.json describes each endpoint",
    };
    let mut out = Problem::new(status, detail).into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

/// `/health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `stalled` when the scheduler loop has not woken for `stall_after_seconds`.
    pub status: String,
    /// Seconds since the scheduler loop last woke (it wakes at least every second).
    pub seconds_since_tick: f64,
    /// The limit beyond which the daemon is reported stalled.
    pub stall_after_seconds: f64,
}

/// Liveness: 200 while the scheduler loop wakes, 503 when it has stalled (a supervisor
/// should then restart the daemon).
#[utoipa::path(get, path = "/health", responses(
    (status = 200, description = "the scheduler loop is alive", body = Health),
    (status = 503, description = "the scheduler loop has stalled", body = Health),
))]
pub(super) async fn health(State(s): State<Arc<Shared>>) -> Response {
    let since = s.since_tick();
    let stalled = since > s.stall_after;
    let body = Health {
        status: if stalled { "stalled" } else { "ok" }.into(),
        seconds_since_tick: since.as_secs_f64(),
        stall_after_seconds: s.stall_after.as_secs_f64(),
    };
    let status = if stalled {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics (the names are in docs/operations.md).
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String),
))]
pub(super) async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses(
    (status = 200, description = "the OpenAPI document", content_type = "application/json", body = Object),
))]
pub(super) async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

/// Every job of the project: schedule, last run, next run, health (as `sluice status`).
#[utoipa::path(get, path = "/api/v1/jobs", security(("bearer" = [])), responses(
    (status = 200, body = Vec<JobStatus>),
    (status = 401, body = Problem), (status = 429, body = Problem),
))]
async fn list_jobs(State(s): State<Arc<Shared>>) -> Api<Json<Vec<JobStatus>>> {
    blocking(move || {
        let (project, _) = Project::load_partial(&s.root);
        let store = s.store()?;
        Ok(Json(crate::status::job_statuses(
            &project,
            &store,
            chrono::Utc::now(),
        )?))
    })
    .await
}

/// Runs `f` (file and state-store reads, which block) on the blocking pool, so requests never
/// hold up the runtime the scheduler loop and the runs share.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Api<T> + Send + 'static) -> Api<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request's task failed: {e}"),
        ))
    })
}

/// Starts a run of the job now. The answer comes as soon as the run is queued; follow it at
/// the `Location` (`/api/v1/triggers/{id}`), whose `run_id` is set when the run finishes.
#[utoipa::path(post, path = "/api/v1/jobs/{job}/runs", security(("bearer" = [])),
    params(("job" = String, Path, description = "job name")),
    request_body(content = Option<TriggerBody>, description = "optional: the run's logical date and vars"),
    responses(
        (status = 202, description = "queued", body = TriggerRecord),
        (status = 400, description = "the body is not JSON, or has fields this version does not know", body = Problem),
        (status = 422, description = "the date is not a date, or a var is not one the job declares", body = Problem),
        (status = 413, description = "the body is over [server] max_body_bytes", body = Problem),
        (status = 404, description = "no such job", body = Problem),
        (status = 409, description = "a run of the job is in progress", body = Problem),
        (status = 503, description = "the daemon is stopping", body = Problem),
        (status = 401, body = Problem), (status = 429, body = Problem),
    ))]
async fn trigger(
    State(s): State<Arc<Shared>>,
    Path(job): Path<String>,
    Extension(Caller(requested_by)): Extension<Caller>,
    body: axum::body::Bytes,
) -> Api<Response> {
    // Read (so the size limit applies) and checked: a field this version does not know is
    // refused rather than ignored.
    let request = if body.trim_ascii().is_empty() {
        TriggerBody::default()
    } else {
        serde_json::from_slice::<TriggerBody>(&body).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not a trigger request: {e}; send no body, or `{{\"date\": \"2026-11-29\", \"vars\": {{\"region\": \"EU\"}}}}`"),
            )
        })?
    };
    let (reply, answer) = oneshot::channel();
    let command = Command::Trigger {
        job,
        requested_by,
        date: request.date,
        vars: request.vars,
        reply,
    };
    let record = ask(&s, command, answer).await?;
    let location = format!("/api/v1/triggers/{}", record.trigger_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response())
}

/// The body of `POST /api/v1/jobs/{job}/runs`: empty, or an object with the run's
/// parameters, as `sluice run --date --var` takes them.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// The run's logical date: `YYYY-MM-DD` (00:00 in the job's time zone) or an RFC 3339
    /// instant. Default: now.
    #[serde(default)]
    #[schema(example = "2026-11-29")]
    pub date: Option<String>,
    /// Values for the job's `[vars]`, by name.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
}

/// `POST /api/v1/jobs/{job}/resume`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Resumed {
    /// The job.
    pub job: String,
    /// Whether it was paused (false: it was running its fires already).
    pub was_paused: bool,
}

/// Resumes a job the daemon paused after failing fires in a row (as `sluice resume`).
#[utoipa::path(post, path = "/api/v1/jobs/{job}/resume", security(("bearer" = [])),
    params(("job" = String, Path, description = "job name")),
    responses(
        (status = 200, body = Resumed),
        (status = 404, body = Problem),
        (status = 401, body = Problem), (status = 429, body = Problem),
    ))]
async fn resume(State(s): State<Arc<Shared>>, Path(job): Path<String>) -> Api<Json<Resumed>> {
    let (reply, answer) = oneshot::channel();
    let was_paused = ask(
        &s,
        Command::Resume {
            job: job.clone(),
            reply,
        },
        answer,
    )
    .await?;
    Ok(Json(Resumed { job, was_paused }))
}

/// A run asked for through the API: its status and, once finished, its run id.
#[utoipa::path(get, path = "/api/v1/triggers/{trigger_id}", security(("bearer" = [])),
    params(("trigger_id" = String, Path)),
    responses(
        (status = 200, body = TriggerRecord),
        (status = 404, body = Problem),
        (status = 401, body = Problem), (status = 429, body = Problem),
    ))]
async fn get_trigger(
    State(s): State<Arc<Shared>>,
    Path(trigger_id): Path<String>,
) -> Api<Json<TriggerRecord>> {
    blocking(move || {
        s.store()?.trigger(&trigger_id)?.map(Json).ok_or_else(|| {
            Problem::new(StatusCode::NOT_FOUND, format!("no trigger `{trigger_id}`"))
        })
    })
    .await
}

/// `GET /api/v1/runs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    /// Only this job's runs.
    job: Option<String>,
    /// At most this many, newest first (default 20, at most 1000).
    limit: Option<usize>,
}

/// The run history, newest first (as `sluice runs`).
#[utoipa::path(get, path = "/api/v1/runs", security(("bearer" = [])), params(RunsQuery),
    responses(
        (status = 200, body = Vec<RunRecord>),
        (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 429, body = Problem),
    ))]
async fn list_runs(
    State(s): State<Arc<Shared>>,
    Query(q): Query<RunsQuery>,
) -> Api<Json<Vec<RunRecord>>> {
    let limit = q.limit.unwrap_or(20).min(1000);
    blocking(move || {
        let store = s.store()?;
        let runs = match &q.job {
            Some(job) => store.runs(job, limit, false)?,
            None => store.all_runs(limit)?,
        };
        Ok(Json(runs))
    })
    .await
}

/// A run's report, as `sluice run --json` prints it (fields in docs/reference.md).
#[utoipa::path(get, path = "/api/v1/runs/{run_id}", security(("bearer" = [])),
    params(("run_id" = String, Path)),
    responses(
        (status = 200, description = "the run report", body = Object),
        (status = 404, body = Problem),
        (status = 401, body = Problem), (status = 429, body = Problem),
    ))]
async fn get_run(State(s): State<Arc<Shared>>, Path(run_id): Path<String>) -> Api<Response> {
    blocking(move || read_report(&s, &run_id)).await
}

/// The report of `run_id` as stored, or 404.
fn read_report(s: &Shared, run_id: &str) -> Api<Response> {
    let not_found = || Problem::new(StatusCode::NOT_FOUND, format!("no run `{run_id}`"));
    let record = s.store()?.run(run_id)?.ok_or_else(not_found)?;
    // The state folder is known: no need to read the project's files for it.
    let path = crate::report::report_path_in(&s.state_dir, &record.job, &record.run_id);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "run `{run_id}` is in the history but its report {} cannot be read: {e}",
                path.display()
            ),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

/// Sends `command` to the scheduler loop and waits for its answer.
async fn ask<T>(
    s: &Shared,
    command: Command,
    answer: oneshot::Receiver<std::result::Result<T, Refused>>,
) -> Api<T> {
    let stopping = || Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    s.commands.send(command).await.map_err(|_| stopping())?;
    match answer.await.map_err(|_| stopping())? {
        Ok(v) => Ok(v),
        Err(Refused::UnknownJob(job)) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("no job `{job}` loads; GET /api/v1/jobs lists them"),
        )),
        Err(Refused::Running(detail)) => Err(Problem::new(StatusCode::CONFLICT, detail)),
        Err(Refused::Stopping) => Err(stopping()),
        Err(Refused::State(detail)) => Err(Problem::new(StatusCode::INTERNAL_SERVER_ERROR, detail)),
        Err(Refused::Invalid(detail)) => {
            Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail))
        }
    }
}
