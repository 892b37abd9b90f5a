//! The Runtime API (2018-06-01) of one execution environment.
//!
//! Every environment gets its own listener (inside its own network namespace under the jail),
//! so a request's environment is known from the socket it arrived on; there is no routing by
//! id and no shared table. The host process serves it. This module owns the runtime-facing
//! state machine of one environment (Started → Ready → Running → ResponseSent → Ready …, or
//! InitError) and nothing else: it hands invocations out and replies back through channels.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::model::limits;

/// One invocation handed to the runtime.
pub struct Invocation {
    pub request_id: Arc<str>,
    pub payload: Bytes,
    /// Absolute deadline, Unix epoch milliseconds.
    pub deadline_ms: u64,
    pub invoked_arn: Arc<str>,
    /// Client context, already base64-decoded (JSON text).
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    pub trace_id: Option<String>,
    pub reply: oneshot::Sender<Reply>,
}

/// What the runtime answered.
#[derive(Debug)]
pub enum Reply {
    Response {
        body: Bytes,
        content_type: Option<HeaderValue>,
    },
    Error {
        body: Bytes,
        error_type: Option<String>,
    },
    /// The runtime posted more than Lambda allows.
    TooLarge { size: usize },
}

/// Init-phase signals.
#[derive(Debug)]
pub enum InitEvent {
    /// The runtime called `/next` for the first time: init is done.
    Ready,
    /// The runtime reported `/runtime/init/error`.
    Failed {
        body: Bytes,
        error_type: Option<String>,
    },
}

struct Current {
    request_id: Arc<str>,
    payload: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    reply: Option<oneshot::Sender<Reply>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Started,
    Initialized,
    InitError,
}

/// The state shared by every connection of one environment's runtime.
pub struct RuntimeApi {
    queue: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    current: Mutex<Option<Current>>,
    phase: Mutex<Phase>,
    init_events: mpsc::UnboundedSender<InitEvent>,
}

type Resp = Response<Full<Bytes>>;

fn json(status: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, error_type: &str, message: &str) -> Resp {
    let body = serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn accepted() -> Resp {
    json(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
}

fn invalid_transition(to: &str) -> Resp {
    error(
        StatusCode::FORBIDDEN,
        "InvalidStateTransition",
        &format!("State transition to {to} failed for runtime."),
    )
}

static H_REQUEST_ID: HeaderName = HeaderName::from_static("lambda-runtime-aws-request-id");
static H_DEADLINE: HeaderName = HeaderName::from_static("lambda-runtime-deadline-ms");
static H_ARN: HeaderName = HeaderName::from_static("lambda-runtime-invoked-function-arn");
static H_TRACE: HeaderName = HeaderName::from_static("lambda-runtime-trace-id");
static H_CLIENT_CONTEXT: HeaderName = HeaderName::from_static("lambda-runtime-client-context");
static H_COGNITO: HeaderName = HeaderName::from_static("lambda-runtime-cognito-identity");
static H_ERROR_TYPE: HeaderName = HeaderName::from_static("lambda-runtime-function-error-type");

impl RuntimeApi {
    /// A new Runtime API; returns the sender invocations are delivered on and the receiver of
    /// init events.
    pub fn new() -> (
        Arc<RuntimeApi>,
        mpsc::Sender<Invocation>,
        mpsc::UnboundedReceiver<InitEvent>,
    ) {
        let (tx, rx) = mpsc::channel(1);
        let (init_tx, init_rx) = mpsc::unbounded_channel();
        let api = Arc::new(RuntimeApi {
            queue: tokio::sync::Mutex::new(rx),
            current: Mutex::new(None),
            phase: Mutex::new(Phase::Started),
            init_events: init_tx,
        });
        (api, tx, init_rx)
    }

    /// Accepts and serves connections on `listener` until the returned task is aborted.
    pub fn serve(
        self: &Arc<Self>,
        listener: std::net::TcpListener,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let api = self.clone();
        Ok(tokio::spawn(async move {
            // Connections live in this set, so aborting the accept task ends them all.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        // Without it, Nagle + delayed ACK add ~40 ms per invoke.
                        let _ = stream.set_nodelay(true);
                        let api = api.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let api = api.clone();
                                async move { Ok::<_, Infallible>(api.handle(req).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .keep_alive(true)
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        }))
    }

    async fn handle(&self, req: Request<Incoming>) -> Resp {
        let path = req.uri().path();
        let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
            return error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "Nimbus serves the Runtime API 2018-06-01; the Extensions and Telemetry APIs are not available yet.",
            );
        };
        let rest = rest.to_string();
        match (req.method(), rest.as_str()) {
            (&Method::GET, "invocation/next") => self.next().await,
            (&Method::POST, "init/error") => self.init_error(req).await,
            (&Method::POST, r) if r.starts_with("invocation/") => {
                let mut parts = r["invocation/".len()..].splitn(2, '/');
                let id = parts.next().unwrap_or("").to_string();
                match parts.next() {
                    Some("response") => self.respond(req, &id, false).await,
                    Some("error") => self.respond(req, &id, true).await,
                    _ => error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "Unknown Runtime API path",
                    ),
                }
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "Unknown Runtime API path",
            ),
        }
    }

    async fn next(&self) -> Resp {
        {
            let Ok(mut phase) = self.phase.lock() else {
                return container_error();
            };
            match *phase {
                Phase::InitError => return invalid_transition("Ready"),
                Phase::Started => {
                    *phase = Phase::Initialized;
                    let _ = self.init_events.send(InitEvent::Ready);
                }
                Phase::Initialized => {}
            }
        }
        // A repeated /next while an invoke is outstanding re-renders it (as RIE does).
        if let Some(resp) = self.render_current() {
            return resp;
        }
        let mut queue = self.queue.lock().await;
        let Some(inv) = queue.recv().await else {
            return container_error();
        };
        drop(queue);
        let mut headers = Vec::with_capacity(6);
        let mut push = |name: &HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.push((name.clone(), v));
            }
        };
        push(&H_REQUEST_ID, &inv.request_id);
        push(&H_DEADLINE, itoa_u64(inv.deadline_ms).as_str());
        push(&H_ARN, &inv.invoked_arn);
        if let Some(t) = &inv.trace_id {
            push(&H_TRACE, t);
        }
        if let Some(c) = &inv.client_context {
            push(&H_CLIENT_CONTEXT, c);
        }
        if let Some(c) = &inv.cognito_identity {
            push(&H_COGNITO, c);
        }
        let current = Current {
            request_id: inv.request_id,
            payload: inv.payload,
            headers,
            reply: Some(inv.reply),
        };
        let resp = render(&current);
        if let Ok(mut slot) = self.current.lock() {
            *slot = Some(current);
        }
        resp
    }

    fn render_current(&self) -> Option<Resp> {
        let slot = self.current.lock().ok()?;
        slot.as_ref().filter(|c| c.reply.is_some()).map(render)
    }

    async fn respond(&self, req: Request<Incoming>, id: &str, is_error: bool) -> Resp {
        let matches = self
            .current
            .lock()
            .is_ok_and(|c| c.as_ref().is_some_and(|c| &*c.request_id == id));
        if !matches {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                "Invalid request ID",
            );
        }
        let content_type = req.headers().get(CONTENT_TYPE).cloned();
        let error_type = req
            .headers()
            .get(&H_ERROR_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let body = match declared {
            Some(n) if n > limits::RUNTIME_RESPONSE_MAX => Err(n),
            _ => match Limited::new(req.into_body(), limits::RUNTIME_RESPONSE_MAX)
                .collect()
                .await
            {
                Ok(b) => Ok(b.to_bytes()),
                Err(_) => Err(declared.unwrap_or(limits::RUNTIME_RESPONSE_MAX + 1)),
            },
        };
        let Some(reply) = self.take_reply(id) else {
            return invalid_transition("ResponseSent");
        };
        match body {
            Ok(body) => {
                let r = if is_error {
                    Reply::Error { body, error_type }
                } else {
                    Reply::Response { body, content_type }
                };
                let _ = reply.send(r);
                accepted()
            }
            Err(size) => {
                let _ = reply.send(Reply::TooLarge { size });
                json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    r#"{"errorMessage":"Exceeded maximum allowed payload size (6291556 bytes).","errorType":"RequestEntityTooLarge"}"#,
                )
            }
        }
    }

    fn take_reply(&self, id: &str) -> Option<oneshot::Sender<Reply>> {
        let mut slot = self.current.lock().ok()?;
        let cur = slot.as_mut().filter(|c| &*c.request_id == id)?;
        let reply = cur.reply.take();
        *slot = None;
        reply
    }

    async fn init_error(&self, req: Request<Incoming>) -> Resp {
        {
            let Ok(mut phase) = self.phase.lock() else {
                return container_error();
            };
            if *phase != Phase::Started {
                return invalid_transition("InitError");
            }
            *phase = Phase::InitError;
        }
        let error_type = req
            .headers()
            .get(&H_ERROR_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(req.into_body(), limits::RUNTIME_RESPONSE_MAX)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let _ = self
            .init_events
            .send(InitEvent::Failed { body, error_type });
        accepted()
    }
}

fn container_error() -> Resp {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Runtime.ContainerError",
        "Container error. Non-recoverable state. Runtime should exit promptly.",
    )
}

fn render(c: &Current) -> Resp {
    let mut r = Response::new(Full::new(c.payload.clone()));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in &c.headers {
        h.insert(k.clone(), v.clone());
    }
    r
}

fn itoa_u64(n: u64) -> String {
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn raw(addr: std::net::SocketAddr, req: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 8192];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivers_an_invocation_and_returns_the_response() {
        let (api, tx, mut init) = RuntimeApi::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = api.serve(listener).unwrap();
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(Invocation {
            request_id: "req-1".into(),
            payload: Bytes::from_static(b"{\"a\":1}"),
            deadline_ms: 123,
            invoked_arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
            client_context: None,
            cognito_identity: None,
            trace_id: None,
            reply: reply_tx,
        })
        .await
        .unwrap();
        let next = tokio::task::spawn_blocking(move || {
            raw(
                addr,
                "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n",
            )
        })
        .await
        .unwrap();
        assert!(matches!(init.recv().await, Some(InitEvent::Ready)));
        let lower = next.to_ascii_lowercase();
        assert!(
            lower.contains("lambda-runtime-aws-request-id: req-1"),
            "{next}"
        );
        assert!(lower.contains("lambda-runtime-deadline-ms: 123"));
        assert!(next.ends_with("{\"a\":1}"));
        let wrong = tokio::task::spawn_blocking(move || {
            raw(addr, "POST /2018-06-01/runtime/invocation/nope/response HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        })
        .await
        .unwrap();
        assert!(wrong.starts_with("HTTP/1.1 400"), "{wrong}");
        let ok = tokio::task::spawn_blocking(move || {
            raw(addr, "POST /2018-06-01/runtime/invocation/req-1/response HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n\"hi\"")
        })
        .await
        .unwrap();
        assert!(ok.starts_with("HTTP/1.1 202"), "{ok}");
        match reply_rx.await.unwrap() {
            Reply::Response { body, .. } => assert_eq!(&body[..], b"\"hi\""),
            other => panic!("unexpected {other:?}"),
        }
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn init_error_is_reported_and_next_is_refused_after_it() {
        let (api, _tx, mut init) = RuntimeApi::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = api.serve(listener).unwrap();
        let r = tokio::task::spawn_blocking(move || {
            raw(addr, "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nLambda-Runtime-Function-Error-Type: Runtime.ImportModuleError\r\nContent-Length: 2\r\n\r\n{}")
        })
        .await
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 202"), "{r}");
        match init.recv().await {
            Some(InitEvent::Failed { error_type, .. }) => {
                assert_eq!(error_type.as_deref(), Some("Runtime.ImportModuleError"))
            }
            other => panic!("unexpected {other:?}"),
        }
        let r = tokio::task::spawn_blocking(move || {
            raw(
                addr,
                "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n",
            )
        })
        .await
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 403"), "{r}");
        server.abort();
    }
}
