//! The `nimbus` CLI's HTTP client: SigV4-signed requests to a Nimbus endpoint.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode};

use crate::auth::{SigningParams, sign_request};

/// Where and as whom to call.
#[derive(Debug, clap::Args, Clone)]
pub struct ClientArgs {
    /// The Nimbus endpoint.
    #[arg(
        long,
        env = "NIMBUS_ENDPOINT",
        default_value = "http://127.0.0.1:9700",
        global = true
    )]
    pub endpoint_url: String,
    /// Read credentials from this server data directory's `credentials` file.
    #[arg(long, env = "NIMBUS_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Region to sign for.
    #[arg(
        long,
        env = "AWS_DEFAULT_REGION",
        default_value = "us-east-1",
        global = true
    )]
    pub region: String,
}

pub struct Client {
    host: String,
    access_key_id: String,
    secret_access_key: String,
    region: String,
}

/// An answer: status, headers, body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON, or the AWS error it carries.
    pub fn json(self) -> anyhow::Result<serde_json::Value> {
        if !self.status.is_success() {
            let code = self
                .header("x-amzn-errortype")
                .unwrap_or("Error")
                .to_string();
            let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
            let msg = v
                .get("message")
                .or_else(|| v.get("Message"))
                .and_then(|m| m.as_str())
                .unwrap_or("");
            bail!("{code} ({}): {msg}", self.status.as_u16());
        }
        if self.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_slice(&self.body)?)
    }
}

fn read_ini(path: &Path, profile: &str) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut in_profile = false;
    let (mut ak, mut sk) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_profile = line.trim_matches(|c| c == '[' || c == ']').trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => ak = Some(v.trim().to_string()),
                "aws_secret_access_key" => sk = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some((ak?, sk?))
}

impl Client {
    /// Credentials: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, else `--data-dir`'s
    /// credentials file, else the default data directory's, else `AWS_SHARED_CREDENTIALS_FILE`
    /// or `~/.aws/credentials` (profile `AWS_PROFILE` or `default`).
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let host = args
            .endpoint_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        if args.endpoint_url.starts_with("https://") {
            bail!(
                "the nimbus CLI speaks plain HTTP to a local endpoint; put TLS in front of the server for remote use"
            );
        }
        let env_key = std::env::var("AWS_ACCESS_KEY_ID")
            .ok()
            .zip(std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
        let from_dir = |d: &Path| read_ini(&d.join("credentials"), "default");
        let creds = env_key
            .or_else(|| args.data_dir.as_deref().and_then(from_dir))
            .or_else(|| from_dir(&crate::config::default_data_dir()))
            .or_else(|| {
                let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))?;
                read_ini(&file, &profile)
            })
            .context("no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or pass --data-dir of the server")?;
        Ok(Client {
            host,
            access_key_id: creds.0,
            secret_access_key: creds.1,
            region: args.region.clone(),
        })
    }

    /// Sends one signed request.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        service: &str,
    ) -> anyhow::Result<Answer> {
        let mut hdrs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        hdrs.push(("host".into(), self.host.clone()));
        let signed = sign_request(
            &SigningParams {
                access_key_id: &self.access_key_id,
                secret_access_key: &self.secret_access_key,
                region: &self.region,
                service,
                now: std::time::SystemTime::now(),
            },
            method,
            path,
            query,
            &hdrs,
            &body,
        );
        let uri = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in hdrs.iter().chain(signed.iter()) {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let stream = tokio::net::TcpStream::connect(&self.host)
            .await
            .with_context(|| format!("cannot reach Nimbus at {}", self.host))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        conn.abort();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// A Lambda REST call with a JSON body.
    pub async fn lambda(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Answer> {
        let (headers, body) = match body {
            Some(v) => (
                vec![("content-type", "application/json".to_string())],
                v.to_string().into_bytes(),
            ),
            None => (vec![], Vec::new()),
        };
        self.call(method, path, query, &headers, body, "lambda")
            .await
    }

    /// A CloudWatch Logs JSON 1.1 call.
    pub async fn logs(
        &self,
        operation: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.call(
            "POST",
            "/",
            "",
            &[
                ("content-type", "application/x-amz-json-1.1".to_string()),
                ("x-amz-target", format!("Logs_20140328.{operation}")),
            ],
            body.to_string().into_bytes(),
            "logs",
        )
        .await?
        .json()
    }
}

/// Percent-encodes a path segment (function names are safe; ARNs carry colons).
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
