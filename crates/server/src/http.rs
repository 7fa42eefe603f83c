//! The HTTP endpoints served beside gRPC on the client port (HTTP/1.1 and HTTP/2 alike), and
//! on `--listen-metrics-urls`: `/metrics` (Prometheus), `/health` (etcd 3.4/3.5's), `/livez`
//! and `/readyz` (etcd 3.6's).
//!
//! - `/health`: `{"health":"true","reason":""}` with 200 when the member knows a leader and a
//!   linearizable read completes (`?serializable=true`: a local read, no leader needed), and no
//!   alarm is raised; 503 with `"health":"false"` and the reason otherwise (`ALARM NOSPACE`,
//!   `RAFT NO LEADER`, ...). `?exclude=NOSPACE` ignores that alarm.
//! - `/livez`: the process serves local reads (`serializable_read`).
//! - `/readyz`: `data_corruption` (no CORRUPT alarm raised), `serializable_read` and
//!   `linearizable_read`: the member can serve linearizable requests.
//!
//! `/livez` and `/readyz` answer `ok` (200), or list the failed checks (503); `?verbose` lists
//! every check, `?exclude=NAME` skips one, as in etcd 3.6.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::{self, Metrics};
use crate::proto::etcdserverpb::AlarmType;
use crate::services::ServiceState;

/// How long a health check's linearizable read may take. Rationale: etcd's checks wait a few
/// election timeouts at most; a probe that waits longer than its caller's timeout tells it
/// nothing.
const READ_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the HTTP handlers read.
pub struct HttpState {
    /// The member's services' state.
    pub services: Arc<ServiceState>,
    /// The member's metrics.
    pub metrics: Arc<Metrics>,
    /// The peer transport, for its counters.
    pub transport: Arc<crate::transport::Transport>,
}

/// The routes: `/metrics`, `/health`, `/livez`, `/readyz`.
pub fn routes(state: Arc<HttpState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// What a request for no route gets: a gRPC call of a method Flotilla does not serve is
/// answered Unimplemented with a message naming it (see [`crate::services::not_served`]),
/// anything else 404.
pub async fn not_found(uri: Uri, request: Request) -> Response {
    if !is_grpc(&request) {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let (package_service, method) = path.split_once('/').unwrap_or((path, ""));
    let service = package_service
        .rsplit_once('.')
        .map_or(package_service, |(_, service)| service);
    let status = crate::services::not_served_at(package_service, service, method);
    // Trailers-only, as gRPC answers a call it refuses before any message.
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/grpc".to_string()),
            (
                header::HeaderName::from_static("grpc-status"),
                (status.code() as i32).to_string(),
            ),
            (
                header::HeaderName::from_static("grpc-message"),
                percent_encode_grpc_message(status.message()),
            ),
        ],
    )
        .into_response()
}

/// Whether `request` is a gRPC call (its content type says so).
fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// gRPC's encoding of `grpc-message`: printable ASCII but `%` as is, every other byte as `%XX`.
fn percent_encode_grpc_message(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Counts gRPC calls for `grpc_server_*` metrics; other requests pass untouched.
pub async fn record_grpc(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let call = is_grpc(&request)
        .then(|| metrics.grpc_started(request.uri().path()))
        .flatten();
    let response = next.run(request).await;
    if let Some(call) = call {
        // A failed unary call is answered with its status in the headers (trailers only); a
        // successful one carries OK in its trailers, after these headers.
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .map_or("OK", metrics::grpc_code_name);
        metrics.grpc_handled(&call, code);
    }
    response
}

async fn render_metrics(State(state): State<Arc<HttpState>>) -> Response {
    let status = state.services.node.status();
    let reader = &state.services.reader;
    let peers = state.transport.counters().peers;
    let text = state.metrics.render(metrics::Snapshot {
        peers: &peers,
        status: &status,
        database_size_bytes: reader.size_bytes(),
        revisions: (reader.current_revision(), reader.compacted_revision()),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The query's `name=value` pairs (no percent-decoding: the names and values used here are
/// plain words).
fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (pair.to_string(), String::new()),
        })
        .collect()
}

/// Whether a linearizable read completes now: the member knows a leader that confirms it
/// still leads, within [`READ_CHECK_TIMEOUT`].
async fn linearizable_read(services: &ServiceState) -> Result<(), String> {
    match tokio::time::timeout(READ_CHECK_TIMEOUT, services.node.read_index()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("etcdserver: request timed out".to_string()),
    }
}

/// Whether the member serves local reads: its loop runs and has not stopped on an error.
fn serializable_read(services: &ServiceState) -> Result<(), String> {
    let status = services.node.status();
    match status.errors.first() {
        Some(error) => Err(error.clone()),
        None => Ok(()),
    }
}

async fn health(State(state): State<Arc<HttpState>>, uri: Uri) -> Response {
    let pairs = query_pairs(&uri);
    let serializable = pairs
        .iter()
        .any(|(name, value)| name == "serializable" && value == "true");
    let services = &state.services;
    let excluded = excluded(&uri);
    let alarm = services
        .reader
        .alarms()
        .into_iter()
        .filter_map(|(_, kind)| AlarmType::try_from(kind).ok())
        .map(|kind| kind.as_str_name())
        .find(|name| !excluded.iter().any(|excluded| excluded == name));
    let outcome = if let Some(alarm) = alarm {
        Err(format!("ALARM {alarm}"))
    } else if !serializable && services.node.status().leader.is_none() {
        Err("RAFT NO LEADER".to_string())
    } else if serializable {
        serializable_read(services).map_err(|error| format!("RANGE ERROR:{error}"))
    } else {
        linearizable_read(services)
            .await
            .map_err(|error| format!("RANGE ERROR:{error}"))
    };
    let (code, body) = match outcome {
        Ok(()) => (
            StatusCode::OK,
            r#"{"health":"true","reason":""}"#.to_string(),
        ),
        Err(reason) => {
            let reason = reason.replace('\\', "\\\\").replace('"', "\\\"");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(r#"{{"health":"false","reason":"{reason}"}}"#),
            )
        }
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn livez(State(state): State<Arc<HttpState>>, uri: Uri) -> Response {
    let checks = vec![("serializable_read", serializable_read(&state.services))];
    probe_response("livez", checks, &uri)
}

async fn readyz(State(state): State<Arc<HttpState>>, uri: Uri) -> Response {
    let excluded = excluded(&uri);
    let corrupt = state
        .services
        .alarm_raised(AlarmType::Corrupt)
        .then(|| "alarm activated: CORRUPT".to_string());
    let mut checks = vec![
        ("data_corruption", corrupt.map_or(Ok(()), Err)),
        ("serializable_read", serializable_read(&state.services)),
    ];
    let linearizable = if excluded.iter().any(|name| name == "linearizable_read") {
        Ok(())
    } else {
        linearizable_read(&state.services).await
    };
    checks.push(("linearizable_read", linearizable));
    probe_response("readyz", checks, &uri)
}

fn excluded(uri: &Uri) -> Vec<String> {
    query_pairs(uri)
        .into_iter()
        .filter(|(name, _)| name == "exclude")
        .map(|(_, value)| value)
        .collect()
}

/// etcd 3.6's probe answer: `ok`, or each check's line and "<probe> check failed".
fn probe_response(
    probe: &str,
    checks: Vec<(&'static str, Result<(), String>)>,
    uri: &Uri,
) -> Response {
    let verbose = query_pairs(uri).iter().any(|(name, _)| name == "verbose");
    let excluded = excluded(uri);
    let mut lines = String::new();
    let mut failed = false;
    for (name, result) in checks {
        if excluded.iter().any(|excluded| excluded == name) {
            lines.push_str(&format!("[+]{name} excluded: ok\n"));
            continue;
        }
        match result {
            Ok(()) => lines.push_str(&format!("[+]{name} ok\n")),
            Err(reason) => {
                failed = true;
                lines.push_str(&format!("[-]{name} failed: {reason}\n"));
            }
        }
    }
    let (code, body) = if failed {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{lines}{probe} check failed\n"),
        )
    } else if verbose {
        (StatusCode::OK, format!("{lines}ok\n"))
    } else {
        (StatusCode::OK, "ok\n".to_string())
    };
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}
