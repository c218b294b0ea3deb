//! API authentication and rate limits: `Authorization: Bearer <token>`, matched by the
//! SHA-256 of the token against `[server.tokens.<name>] sha256`, then that token's
//! `requests_per_minute` (a GCRA limiter from the `governor` crate: bursts up to the minute's
//! allowance, refilled evenly).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use super::Problem;
use crate::config::spec::TokenSpec;

/// The configured tokens, by hash, each with its limiter.
pub(super) struct Tokens {
    by_hash: HashMap<String, (String, DefaultDirectRateLimiter)>,
}

/// The name of the token a request came with, for handlers.
#[derive(Debug, Clone)]
pub(super) struct Caller(pub String);

/// Lowercase hex SHA-256 of `token`: what `[server.tokens.<name>] sha256` holds.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Tokens {
    pub(super) fn new(specs: &BTreeMap<String, TokenSpec>) -> Tokens {
        let by_hash = specs
            .iter()
            .map(|(name, spec)| {
                let per_minute =
                    NonZeroU32::new(spec.requests_per_minute).unwrap_or(NonZeroU32::MIN);
                let limiter = RateLimiter::direct(Quota::per_minute(per_minute));
                (
                    spec.sha256.get_ref().to_ascii_lowercase(),
                    (name.clone(), limiter),
                )
            })
            .collect();
        Tokens { by_hash }
    }
}

/// Middleware: 401 without a known token, 429 (with `Retry-After`, seconds) beyond its rate;
/// else the request goes on with its [`Caller`].
pub(super) async fn authenticate(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = presented else {
        return unauthorized("send `Authorization: Bearer <token>`; tokens are set in [server.tokens] of sluice.toml");
    };
    let Some((name, limiter)) = tokens.by_hash.get(&token_hash(token)) else {
        return unauthorized("the token is not one of [server.tokens] in sluice.toml");
    };
    if let Err(not_until) = limiter.check() {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("token `{name}` is over its requests_per_minute; retry in {seconds} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    request.extensions_mut().insert(Caller(name.clone()));
    next.run(request).await
}

fn unauthorized(detail: &str) -> Response {
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
