//! The control-plane HTTP API: Lambda's REST API 2015-03-31 (and the CloudWatch Logs subset
//! that serves function logs), authenticated with SigV4.
//!
//! This layer only parses: it authenticates, routes on method + full path (API-date prefix
//! included), validates input into domain types, calls the store or the invoker, and renders
//! the answer in exactly the JSON shapes the AWS SDKs expect. Errors become responses in one
//! place, [`error`].

pub mod account;
pub mod aliases;
pub mod concurrency;
pub mod error;
pub mod event_invoke_config;
pub mod functions;
pub mod invoke;
pub mod logs;
pub mod sqs;
pub mod versions;
pub mod wire;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;

use crate::auth::KeyStore;
use crate::invoke::Invoker;
use crate::logs::LogStore;
use crate::model::limits;
use crate::store::Store;
pub use error::ApiError;

/// Everything the API needs, shared by all connections.
pub struct AppState {
    pub store: Arc<Store>,
    pub invoker: Arc<Invoker>,
    pub keys: KeyStore,
    pub logs: LogStore,
    pub region: String,
    /// Signs the download links GetFunction returns.
    pub url_key: Vec<u8>,
    /// Wakes the provisioned-concurrency reconciler after a configuration change.
    pub reconcile_now: tokio::sync::Notify,
    /// Durable asynchronous invocation: the event queue, its configs and built-in queues.
    pub queue: crate::queue::EventQueue,
}

/// Who is calling, and about what.
pub struct Ctx {
    pub account: String,
    pub request_id: String,
    /// `Host` of the request, to build links back to this server.
    pub host: String,
}

/// A parsed request, after authentication.
pub struct ApiRequest {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ApiRequest {
    pub fn query(&self, name: &str) -> Option<String> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub type Resp = Response<Full<Bytes>>;

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An empty response.
pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// The path's non-empty segments, percent-decoded: what [`dispatch`] routes on.
fn path_segments(raw_path: &str) -> Vec<String> {
    raw_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect()
}

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                match crate::workers::get() {
                    // The connection moves to a worker's own reactor (decision 0009).
                    Some(workers) => match stream.into_std() {
                        Ok(stream) => workers.spawn_with(move || async move {
                            if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                                serve_connection(stream, state).await;
                            }
                        }),
                        Err(e) => tracing::warn!("cannot hand a connection to a worker: {e}"),
                    },
                    None => {
                        tokio::spawn(serve_connection(stream, state));
                    }
                }
            }
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, state: Arc<AppState>) {
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .await;
}

/// Handles one request; never fails (errors are responses) and never panics the server: a
/// panic in a handler is caught by its own task.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Resp {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut resp = match route(&state, req, &request_id).await {
        Ok(r) => r,
        Err(e) => e.into_response(&request_id),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    request_id: &str,
) -> Result<Resp, ApiError> {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();

    // Unauthenticated endpoints of Nimbus itself.
    match (&method, raw_path.as_str()) {
        (&Method::GET, "/nimbus/health") => {
            return Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
        }
        (&Method::GET, "/nimbus/metrics") => return Ok(account::metrics(state)),
        (&Method::GET, p) if p.starts_with("/nimbus/code/") => {
            return functions::download_code(state, p, &parse_query(&raw_query));
        }
        _ => {}
    }

    let (parts, body) = req.into_parts();
    // Refuse what cannot be authentic on its headers alone, before buffering a body: the
    // signature covers the body, but nothing else that can fail needs it.
    let pending = crate::auth::precheck(&parts.headers, &state.keys, SystemTime::now())?;
    let segments = path_segments(&raw_path);
    let limit = BodyLimit::of(&method, &segments, &parts.headers);
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit.read_at_most) {
        return Err(limit.exceeded());
    }
    let body = Limited::new(body, limit.read_at_most)
        .collect()
        .await
        .map_err(|_| limit.exceeded())?
        .to_bytes();

    let creds = pending.verify(method.as_str(), &raw_path, &raw_query, &body)?;
    let ctx = Ctx {
        account: creds.account_id.clone(),
        request_id: request_id.to_string(),
        host: parts
            .headers
            .get(hyper::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1")
            .to_string(),
    };
    let req = ApiRequest {
        method,
        segments,
        query: parse_query(&raw_query),
        headers: parts.headers,
        body,
    };
    dispatch(state, &ctx, req).await
}

/// Invoke bodies this far past their payload limit are still read, so that the handler, which
/// owns the exact check, answers them as it always has, and a client that sends a slightly
/// oversized payload whole reads its 413 on a connection still open. Beyond it they are refused
/// unread, with the same 413.
const BODY_LIMIT_SLACK: usize = 64 * 1024;

/// The cap on every body that is not a deployment package or a payload: JSON control-plane
/// calls (the largest, UpdateFunctionConfiguration, is bounded by 4 KB of environment) and the
/// CloudWatch Logs and SQS reads Nimbus serves, which take a few fields. Ours, not Lambda's.
const CONTROL_REQUEST_MAX: usize = 1024 * 1024;

/// How much body a route may send before it is authenticated, and the operation its 413 names.
/// Keep in step with [`dispatch`]: a route missing here gets [`CONTROL_REQUEST_MAX`].
struct BodyLimit {
    /// The operation's own limit, as the 413 states it.
    limit: usize,
    operation: &'static str,
    /// `limit`, plus [`BODY_LIMIT_SLACK`] where the handler checks the exact limit itself.
    read_at_most: usize,
}

impl BodyLimit {
    fn of(method: &Method, segments: &[String], headers: &HeaderMap) -> Self {
        let exact = |limit, operation| Self {
            limit,
            operation,
            read_at_most: limit,
        };
        let checked_by_handler = |limit, operation| Self {
            limit,
            operation,
            read_at_most: limit + BODY_LIMIT_SLACK,
        };
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method, seg.as_slice()) {
            (&Method::POST, ["2015-03-31", "functions"]) => {
                exact(limits::CREATE_REQUEST_MAX, "CreateFunction")
            }
            (&Method::PUT, ["2015-03-31", "functions", _, "code"]) => {
                exact(limits::CREATE_REQUEST_MAX, "UpdateFunctionCode")
            }
            (&Method::POST, ["2015-03-31", "functions", _, "invocations"]) => {
                let invocation_type = headers
                    .get("x-amz-invocation-type")
                    .and_then(|v| v.to_str().ok());
                checked_by_handler(invoke::payload_limit(invocation_type), "InvokeFunction")
            }
            (&Method::POST, ["2014-11-13", "functions", _, "invoke-async"]) => {
                checked_by_handler(limits::INVOKE_ASYNC_PAYLOAD_MAX, "InvokeAsync")
            }
            _ => exact(CONTROL_REQUEST_MAX, "this"),
        }
    }

    fn exceeded(&self) -> ApiError {
        too_large(self.limit, self.operation)
    }
}

async fn dispatch(state: &Arc<AppState>, ctx: &Ctx, req: ApiRequest) -> Result<Resp, ApiError> {
    if req.method == Method::POST
        && req.segments.is_empty()
        && let Some(target) = req.header("x-amz-target")
    {
        let target = target.to_string();
        if target.starts_with("AmazonSQS.") {
            return Ok(sqs::dispatch(state, ctx, &target, &req.body).await);
        }
        return logs::dispatch(state, ctx, &target, &req.body);
    }
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match (&req.method, seg.as_slice()) {
        (&Method::POST, ["2015-03-31", "functions"]) => functions::create(state, ctx, &req).await,
        (&Method::GET, ["2015-03-31", "functions"]) => functions::list(state, ctx, &req),
        (&Method::GET, ["2015-03-31", "functions", f]) => functions::get(state, ctx, &req, f),
        (&Method::DELETE, ["2015-03-31", "functions", f]) => {
            functions::delete(state, ctx, &req, f).await
        }
        (&Method::GET, ["2015-03-31", "functions", f, "configuration"]) => {
            functions::get_configuration(state, ctx, &req, f)
        }
        (&Method::PUT, ["2015-03-31", "functions", f, "configuration"]) => {
            functions::update_configuration(state, ctx, &req, f)
        }
        (&Method::PUT, ["2015-03-31", "functions", f, "code"]) => {
            functions::update_code(state, ctx, &req, f).await
        }
        (&Method::POST, ["2015-03-31", "functions", f, "invocations"]) => {
            invoke::invoke(state, ctx, &req, f).await
        }
        (&Method::POST, ["2014-11-13", "functions", f, "invoke-async"]) => {
            invoke::invoke_async_legacy(state, ctx, &req, f).await
        }
        (&Method::POST, ["2015-03-31", "functions", f, "versions"]) => {
            versions::publish(state, ctx, &req, f)
        }
        (&Method::GET, ["2015-03-31", "functions", f, "versions"]) => {
            versions::list(state, ctx, &req, f)
        }
        (&Method::POST, ["2015-03-31", "functions", f, "aliases"]) => {
            aliases::create(state, ctx, &req, f)
        }
        (&Method::GET, ["2015-03-31", "functions", f, "aliases"]) => {
            aliases::list(state, ctx, &req, f)
        }
        (&Method::GET, ["2015-03-31", "functions", f, "aliases", a]) => {
            aliases::get(state, ctx, f, a)
        }
        (&Method::PUT, ["2015-03-31", "functions", f, "aliases", a]) => {
            aliases::update(state, ctx, &req, f, a)
        }
        (&Method::DELETE, ["2015-03-31", "functions", f, "aliases", a]) => {
            aliases::delete(state, ctx, f, a)
        }
        (&Method::PUT, ["2017-10-31", "functions", f, "concurrency"]) => {
            concurrency::put_reserved(state, ctx, &req, f)
        }
        (&Method::GET, ["2019-09-30", "functions", f, "concurrency"]) => {
            concurrency::get_reserved(state, ctx, f)
        }
        (&Method::DELETE, ["2017-10-31", "functions", f, "concurrency"]) => {
            concurrency::delete_reserved(state, ctx, f)
        }
        (&Method::PUT, ["2019-09-30", "functions", f, "provisioned-concurrency"]) => {
            concurrency::put_provisioned(state, ctx, &req, f)
        }
        (&Method::GET, ["2019-09-30", "functions", f, "provisioned-concurrency"])
            if req.query("List").as_deref() == Some("ALL") =>
        {
            concurrency::list_provisioned(state, ctx, &req, f)
        }
        (&Method::GET, ["2019-09-30", "functions", f, "provisioned-concurrency"]) => {
            concurrency::get_provisioned(state, ctx, &req, f)
        }
        (&Method::DELETE, ["2019-09-30", "functions", f, "provisioned-concurrency"]) => {
            concurrency::delete_provisioned(state, ctx, &req, f)
        }
        (&Method::PUT, ["2019-09-25", "functions", f, "event-invoke-config"]) => {
            event_invoke_config::put(state, ctx, &req, f).await
        }
        (&Method::POST, ["2019-09-25", "functions", f, "event-invoke-config"]) => {
            event_invoke_config::update(state, ctx, &req, f).await
        }
        (&Method::GET, ["2019-09-25", "functions", f, "event-invoke-config"]) => {
            event_invoke_config::get(state, ctx, &req, f)
        }
        (&Method::DELETE, ["2019-09-25", "functions", f, "event-invoke-config"]) => {
            event_invoke_config::delete(state, ctx, &req, f).await
        }
        (&Method::GET, ["2019-09-25", "functions", f, "event-invoke-config", "list"]) => {
            event_invoke_config::list(state, ctx, &req, f)
        }
        (&Method::GET, ["2016-08-19", "account-settings"]) => Ok(account::settings(state, ctx)),
        (&Method::GET, ["nimbus", "status"]) => Ok(account::status(state, ctx)),
        _ => Err(ApiError::UnknownOperation(format!(
            "Nimbus does not implement {} /{} yet; docs/api-compatibility.md lists what it supports.",
            req.method,
            req.segments.join("/")
        ))),
    }
}

pub fn too_large(limit: usize, op: &str) -> ApiError {
    ApiError::RequestTooLarge(format!(
        "Request must be smaller than {limit} bytes for the {op} operation"
    ))
}

/// Parses a JSON body into a wire struct, with Lambda's message for bodies that are not JSON.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::InvalidRequestContent(format!("Could not parse request body into json: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (bytes read at most, the 413's message) for a request.
    fn cap(
        method: Method,
        path: &str,
        headers: &[(&'static str, &'static str)],
    ) -> (usize, String) {
        let segments = path_segments(path);
        let mut map = HeaderMap::new();
        for &(name, value) in headers {
            map.insert(name, HeaderValue::from_static(value));
        }
        let limit = BodyLimit::of(&method, &segments, &map);
        (limit.read_at_most, limit.exceeded().to_string())
    }

    #[test]
    fn packages_are_read_up_to_the_create_request_cap() {
        for (method, path, op) in [
            (Method::POST, "/2015-03-31/functions", "CreateFunction"),
            (
                Method::PUT,
                "/2015-03-31/functions/f/code",
                "UpdateFunctionCode",
            ),
        ] {
            assert_eq!(
                cap(method, path, &[]),
                (
                    limits::CREATE_REQUEST_MAX,
                    format!("Request must be smaller than 69905067 bytes for the {op} operation")
                )
            );
        }
    }

    #[test]
    fn invoke_bodies_are_capped_near_their_payload_limit_with_the_handlers_413() {
        let path =
            "/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:f/invocations";
        for (invocation_type, limit) in [
            (None, limits::SYNC_PAYLOAD_MAX),
            (Some("RequestResponse"), limits::SYNC_PAYLOAD_MAX),
            (Some("DryRun"), limits::SYNC_PAYLOAD_MAX),
            (Some("Event"), limits::ASYNC_PAYLOAD_MAX),
        ] {
            let headers: Vec<_> = invocation_type
                .map(|t| ("x-amz-invocation-type", t))
                .into_iter()
                .collect();
            let handler_says = too_large(limit, "InvokeFunction").to_string();
            assert_eq!(
                cap(Method::POST, path, &headers),
                (limit + BODY_LIMIT_SLACK, handler_says),
                "{invocation_type:?}"
            );
        }
        let legacy = cap(Method::POST, "/2014-11-13/functions/f/invoke-async/", &[]);
        assert_eq!(
            legacy,
            (
                limits::INVOKE_ASYNC_PAYLOAD_MAX + BODY_LIMIT_SLACK,
                too_large(limits::INVOKE_ASYNC_PAYLOAD_MAX, "InvokeAsync").to_string()
            )
        );
    }

    #[test]
    fn everything_else_is_capped_at_a_mebibyte() {
        for (method, path) in [
            (Method::PUT, "/2015-03-31/functions/f/configuration"),
            (Method::PUT, "/2019-09-25/functions/f/event-invoke-config"),
            (Method::POST, "/2015-03-31/functions/f/aliases"),
            (Method::POST, "/"),
            (Method::GET, "/2015-03-31/functions"),
            (Method::POST, "/2015-03-31/functions/f/no-such-thing"),
        ] {
            assert_eq!(
                cap(method.clone(), path, &[]).0,
                CONTROL_REQUEST_MAX,
                "{method} {path}"
            );
        }
    }
}
