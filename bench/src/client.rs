//! The load generator's HTTP side: keep-alive HTTP/1.1 connections (hyper, `TCP_NODELAY`),
//! SigV4-signed requests (the server's own signer, `nimbus::auth::sign_request`), and the
//! handful of Lambda / CloudWatch Logs calls the sections need.
//!
//! A request is signed once into a [`Prepared`] and then sent many times: a signature stays
//! valid for the server's clock-skew window (minutes), and every section re-signs at its start,
//! so the measured loops spend client CPU on HTTP only, not on HMACs, and the 2 cores the client
//! shares with the server go to the server.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use nimbus::auth::{SigningParams, sign_request};
use serde_json::{Value, json};

/// The key the harness gives the servers it starts (`--access-key`).
pub(crate) const ACCESS_KEY_ID: &str = "testing";
pub(crate) const SECRET_ACCESS_KEY: &str = "testing";
pub(crate) const ACCOUNT_ID: &str = "123456789012";
const REGION: &str = "us-east-1";
/// A control-plane call that takes longer than this is a hung server, not a slow one.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

/// A server to talk to: its address and how to sign for it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    host: String,
}

/// A signed request, ready to be sent any number of times.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Prepared {
    pub(crate) fn request(&self) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// A status, headers and the whole body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A successful invoke: 200 and no `X-Amz-Function-Error`.
    pub(crate) fn invoke_ok(&self) -> bool {
        self.status == StatusCode::OK && self.header("x-amz-function-error").is_none()
    }

    fn json(self, what: &str) -> anyhow::Result<Value> {
        if !self.status.is_success() {
            bail!(
                "{what}: HTTP {} {} {}",
                self.status.as_u16(),
                self.header("x-amzn-errortype").unwrap_or(""),
                String::from_utf8_lossy(&self.body)
            );
        }
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).with_context(|| format!("{what}: body is not JSON"))
    }
}

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, task })
    }

    /// Sends one request and reads the whole answer.
    pub(crate) async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends and returns the answer with the round-trip time (from handing the request to
    /// hyper until the last body byte).
    pub(crate) async fn timed(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<(Answer, Duration)> {
        self.sender.ready().await?;
        let t0 = Instant::now();
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        let elapsed = t0.elapsed();
        Ok((
            Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            },
            elapsed,
        ))
    }
}

/// How to run a function: the parts of CreateFunction the sections vary.
#[derive(Debug, Clone)]
pub(crate) struct FunctionSpec {
    pub(crate) name: String,
    pub(crate) runtime: &'static str,
    pub(crate) handler: &'static str,
    pub(crate) zip: Bytes,
    pub(crate) timeout_s: u32,
    pub(crate) memory_mb: u32,
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            host: addr.to_string(),
        }
    }

    /// Signs a request (service `lambda` or `logs`).
    pub(crate) fn prepare(
        &self,
        service: &str,
        method: Method,
        path: &str,
        extra: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Prepared> {
        let mut headers: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_string()))
            .collect();
        headers.push(("host".into(), self.host.clone()));
        let signed = sign_request(
            &SigningParams {
                access_key_id: ACCESS_KEY_ID,
                secret_access_key: SECRET_ACCESS_KEY,
                region: REGION,
                service,
                now: SystemTime::now(),
            },
            method.as_str(),
            path,
            "",
            &headers,
            &body,
        );
        let mut map = HeaderMap::with_capacity(headers.len() + signed.len());
        for (k, v) in headers.iter().chain(signed.iter()) {
            map.append(
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            );
        }
        Ok(Prepared {
            method,
            uri: path.parse()?,
            headers: map,
            body,
        })
    }

    /// A synchronous Invoke of `function` with `payload`.
    pub(crate) fn invoke(&self, function: &str, payload: &str) -> anyhow::Result<Prepared> {
        self.prepare(
            "lambda",
            Method::POST,
            &format!("/2015-03-31/functions/{function}/invocations"),
            &[("content-type", "application/json")],
            Bytes::from(payload.to_string()),
        )
    }

    /// One control-plane call on a connection of its own.
    async fn call(&self, prepared: Prepared) -> anyhow::Result<Answer> {
        let fut = async {
            let mut conn = Conn::open(self.addr).await?;
            conn.send(prepared.request()).await
        };
        tokio::time::timeout(CONTROL_TIMEOUT, fut)
            .await
            .context("the server did not answer a control-plane call within 60 s")?
    }

    pub(crate) async fn health(&self) -> anyhow::Result<()> {
        let req = Request::get("/nimbus/health")
            .header("host", &self.host)
            .body(Full::new(Bytes::new()))?;
        let mut conn = Conn::open(self.addr).await?;
        let a = conn.send(req).await?;
        if a.status != StatusCode::OK {
            bail!("health check answered {}", a.status);
        }
        Ok(())
    }

    pub(crate) async fn create_function(&self, f: &FunctionSpec) -> anyhow::Result<()> {
        use base64::Engine;
        let body = json!({
            "FunctionName": f.name,
            "Runtime": f.runtime,
            "Role": format!("arn:aws:iam::{ACCOUNT_ID}:role/nimbus-bench"),
            "Handler": f.handler,
            "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(&f.zip)},
            "Timeout": f.timeout_s,
            "MemorySize": f.memory_mb,
        });
        let p = self.prepare(
            "lambda",
            Method::POST,
            "/2015-03-31/functions",
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )?;
        self.call(p)
            .await?
            .json(&format!("CreateFunction {}", f.name))?;
        Ok(())
    }

    pub(crate) async fn delete_function(&self, name: &str) -> anyhow::Result<()> {
        let p = self.prepare(
            "lambda",
            Method::DELETE,
            &format!("/2015-03-31/functions/{name}"),
            &[],
            Bytes::new(),
        )?;
        self.call(p)
            .await?
            .json(&format!("DeleteFunction {name}"))?;
        Ok(())
    }

    /// `GET /nimbus/status`: idle environments per function name.
    pub(crate) async fn idle_environments(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let p = self.prepare("lambda", Method::GET, "/nimbus/status", &[], Bytes::new())?;
        let v = self.call(p).await?.json("GET /nimbus/status")?;
        let pools = v["Pools"].as_array().cloned().unwrap_or_default();
        Ok(pools
            .iter()
            .map(|p| {
                (
                    p["FunctionName"].as_str().unwrap_or("").to_string(),
                    p["IdleEnvironments"].as_u64().unwrap_or(0),
                )
            })
            .collect())
    }

    /// Idle environments of one function (0 when it has no pool).
    pub(crate) async fn idle_of(&self, function: &str) -> anyhow::Result<u64> {
        Ok(self
            .idle_environments()
            .await?
            .iter()
            .filter(|(f, _)| f == function)
            .map(|(_, n)| n)
            .sum())
    }

    /// The `Init Duration` (ms) of the REPORT line of `request_id` in `function`'s log group:
    /// `Ok(None)` when the line carries none (a warm invoke), an error when there is no line.
    pub(crate) async fn init_duration_ms(
        &self,
        function: &str,
        request_id: &str,
    ) -> anyhow::Result<Option<f64>> {
        let needle = format!("REPORT RequestId: {request_id}");
        let pattern = format!("\"{needle}\"");
        let mut token: Option<String> = None;
        // A page may stop at the server's scan cap before the line: follow nextToken.
        loop {
            let v = self
                .filter_log_events(function, &pattern, token.as_deref())
                .await?;
            let found = v["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["message"].as_str())
                .find(|m| m.starts_with(&needle));
            if let Some(line) = found {
                return Ok(parse_init_duration(line));
            }
            match v["nextToken"].as_str() {
                Some(t) if token.as_deref() != Some(t) => token = Some(t.to_string()),
                _ => bail!("no REPORT line for {request_id} in /aws/lambda/{function}"),
            }
        }
    }
}

impl Endpoint {
    /// One FilterLogEvents page of `/aws/lambda/FUNCTION` matching `pattern`.
    async fn filter_log_events(
        &self,
        function: &str,
        pattern: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut body = json!({
            "logGroupName": format!("/aws/lambda/{function}"),
            "filterPattern": pattern,
        });
        if let Some(t) = token {
            body["nextToken"] = json!(t);
        }
        let p = self.prepare(
            "logs",
            Method::POST,
            "/",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", "Logs_20140328.FilterLogEvents"),
            ],
            Bytes::from(body.to_string()),
        )?;
        self.call(p).await?.json("FilterLogEvents")
    }

    /// `Duration` (ms) of every REPORT line of `function` without an Init Duration (warm
    /// invokes), at most `max` of them: the server's own measure of delivery → reply.
    pub(crate) async fn warm_report_durations_ms(
        &self,
        function: &str,
        max: usize,
    ) -> anyhow::Result<Vec<f64>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        while out.len() < max {
            let v = self
                .filter_log_events(function, "\"REPORT RequestId\"", token.as_deref())
                .await?;
            for m in v["events"].as_array().into_iter().flatten() {
                let line = m["message"].as_str().unwrap_or("");
                if parse_init_duration(line).is_none()
                    && let Some(d) = parse_duration(line)
                {
                    out.push(d);
                }
            }
            match v["nextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        out.truncate(max);
        Ok(out)
    }
}

/// `Duration: 0.12 ms` (not Billed or Init Duration) out of a REPORT line.
pub(crate) fn parse_duration(report: &str) -> Option<f64> {
    report
        .split('\t')
        .find_map(|f| f.trim().strip_prefix("Duration:"))
        .and_then(|v| v.trim().trim_end_matches("ms").trim().parse().ok())
}

/// `Init Duration: 12.34 ms` out of a REPORT line.
pub(crate) fn parse_init_duration(report: &str) -> Option<f64> {
    report
        .split('\t')
        .find_map(|f| f.trim().strip_prefix("Init Duration:"))
        .and_then(|v| v.trim().trim_end_matches("ms").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_duration_from_a_report_line() {
        let line = "REPORT RequestId: r1\tDuration: 4157.16 ms\tBilled Duration: 4158 ms\tMemory Size: 256 MB\tMax Memory Used: 99 MB\tInit Duration: 841.60 ms\t";
        assert_eq!(parse_init_duration(line), Some(841.6));
        let warm = "REPORT RequestId: r2\tDuration: 0.12 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 9 MB\t";
        assert_eq!(parse_init_duration(warm), None);
        assert_eq!(parse_duration(line), Some(4157.16));
        assert_eq!(parse_duration(warm), Some(0.12));
    }

    #[test]
    fn prepared_requests_carry_a_sigv4_signature() {
        let ep = Endpoint::new("127.0.0.1:9".parse().expect("address"));
        let p = ep.invoke("f", "{}").expect("signs");
        let r = p.request();
        assert_eq!(r.uri().path(), "/2015-03-31/functions/f/invocations");
        let auth = r.headers()["authorization"].to_str().expect("ascii");
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=testing/"));
        assert!(auth.contains("/us-east-1/lambda/aws4_request"));
        assert_eq!(r.headers()["host"], "127.0.0.1:9");
        assert!(r.headers().contains_key("x-amz-date"));
    }
}
