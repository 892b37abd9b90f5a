//! The read side of Nimbus's built-in queues, in SQS's JSON 1.0 protocol (`POST /` with
//! `X-Amz-Target: AmazonSQS.<Operation>`), so `aws sqs receive-message` and boto3 work:
//! GetQueueUrl, CreateQueue, ListQueues, GetQueueAttributes, ReceiveMessage, DeleteMessage,
//! DeleteMessageBatch and PurgeQueue. Destination and dead-letter ARNs of the form
//! `arn:aws:sqs:REGION:ACCOUNT:NAME` fill these queues ([`crate::queue`]).
//!
//! A queue exists once it is named: a queue never written to is simply empty. Messages are
//! kept until deleted. SQS's errors have their own JSON shape (`__type`, lower-case
//! `message`, the `x-amzn-query-error` header its clients map codes from), so they are
//! rendered here rather than through Lambda's [`super::error`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{AppState, Ctx, Resp};
use crate::queue::{MessageAttribute, QueueError, ReceivedMessage, valid_queue_name};

/// SQS's defaults and bounds (SQS developer guide).
const DEFAULT_VISIBILITY_S: u64 = 30;
const MAX_VISIBILITY_S: u64 = 43_200;
const MAX_WAIT_S: u64 = 20;
const MAX_MESSAGES: usize = 10;

#[derive(Debug, thiserror::Error)]
enum SqsError {
    #[error("The specified queue does not exist.")]
    QueueDoesNotExist,
    #[error("The input receipt handle \"{0}\" is not a valid receipt handle.")]
    ReceiptHandleIsInvalid(String),
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("{0}")]
    MissingParameter(String),
    #[error("{0}")]
    UnsupportedOperation(String),
    #[error("{0}")]
    Internal(String),
}

impl From<QueueError> for SqsError {
    fn from(e: QueueError) -> Self {
        SqsError::Internal(e.to_string())
    }
}

impl SqsError {
    /// (status, shape name, query-compatible code).
    fn shape(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            SqsError::QueueDoesNotExist => (
                StatusCode::BAD_REQUEST,
                "QueueDoesNotExist",
                "AWS.SimpleQueueService.NonExistentQueue;Sender",
            ),
            SqsError::ReceiptHandleIsInvalid(_) => (
                StatusCode::BAD_REQUEST,
                "ReceiptHandleIsInvalid",
                "ReceiptHandleIsInvalid;Sender",
            ),
            SqsError::InvalidParameterValue(_) => (
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                "InvalidParameterValue;Sender",
            ),
            SqsError::MissingParameter(_) => (
                StatusCode::BAD_REQUEST,
                "MissingRequiredParameterException",
                "MissingParameter;Sender",
            ),
            SqsError::UnsupportedOperation(_) => (
                StatusCode::BAD_REQUEST,
                "UnsupportedOperation",
                "AWS.SimpleQueueService.UnsupportedOperation;Sender",
            ),
            SqsError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "InternalError;Receiver",
            ),
        }
    }

    fn into_response(self, request_id: &str) -> Resp {
        let (status, shape, query_code) = self.shape();
        let message = match &self {
            SqsError::Internal(detail) => {
                tracing::error!(request_id, "internal error: {detail}");
                "An internal error occurred. The request id names it in the server's log."
                    .to_string()
            }
            other => other.to_string(),
        };
        let mut r =
            sqs_json(&json!({"__type": format!("com.amazonaws.sqs#{shape}"), "message": message}));
        *r.status_mut() = status;
        r.headers_mut()
            .insert("x-amzn-query-error", HeaderValue::from_static(query_code));
        r
    }
}

fn sqs_json(v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    r
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, SqsError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| SqsError::InvalidParameterValue(format!("The request body is not valid: {e}")))
}

/// Serves one `AmazonSQS.*` operation; never fails (errors are SQS-shaped responses).
pub async fn dispatch(state: &Arc<AppState>, ctx: &Ctx, target: &str, body: &[u8]) -> Resp {
    let op = target.strip_prefix("AmazonSQS.").unwrap_or(target);
    let result = match op {
        "GetQueueUrl" => get_queue_url(ctx, parse(body)),
        "CreateQueue" => create_queue(state, ctx, parse(body)).await,
        "ListQueues" => list_queues(state, ctx, parse(body)).await,
        "GetQueueAttributes" => get_queue_attributes(state, ctx, parse(body)).await,
        "ReceiveMessage" => receive_message(state, ctx, parse(body)).await,
        "DeleteMessage" => delete_message(state, ctx, parse(body)).await,
        "DeleteMessageBatch" => delete_message_batch(state, ctx, parse(body)).await,
        "PurgeQueue" => purge_queue(state, ctx, parse(body)).await,
        other => Err(SqsError::UnsupportedOperation(format!(
            "Nimbus's built-in queues do not implement {other}; they are filled by Lambda destinations and dead-letter configs \
             and read with ReceiveMessage / DeleteMessage."
        ))),
    };
    result.unwrap_or_else(|e| e.into_response(&ctx.request_id))
}

fn queue_url(ctx: &Ctx, name: &str) -> String {
    format!("http://{}/{}/{name}", ctx.host, ctx.account)
}

/// The queue a `QueueUrl` names: `<scheme>://<host>/<account>/<name>`, of the caller's
/// account (any host: clients may have been handed an AWS-style URL).
fn queue_name(ctx: &Ctx, url: Option<&str>) -> Result<String, SqsError> {
    let url = url.ok_or_else(|| {
        SqsError::MissingParameter("The request must contain the parameter QueueUrl.".into())
    })?;
    let path = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    let segments: Vec<&str> = path.split('/').skip(1).filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [account, name] if *account == ctx.account && valid_queue_name(name) => {
            Ok(name.to_string())
        }
        _ => Err(SqsError::QueueDoesNotExist),
    }
}

fn checked_name(name: Option<String>) -> Result<String, SqsError> {
    let name = name.ok_or_else(|| {
        SqsError::MissingParameter("The request must contain the parameter QueueName.".into())
    })?;
    if valid_queue_name(&name) {
        Ok(name)
    } else {
        Err(SqsError::InvalidParameterValue(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length"
                .into(),
        ))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueueNameRequest {
    queue_name: Option<String>,
    #[serde(rename = "QueueOwnerAWSAccountId")]
    queue_owner_aws_account_id: Option<String>,
}

fn get_queue_url(ctx: &Ctx, req: Result<QueueNameRequest, SqsError>) -> Result<Resp, SqsError> {
    let req = req?;
    if req
        .queue_owner_aws_account_id
        .as_ref()
        .is_some_and(|a| *a != ctx.account)
    {
        return Err(SqsError::QueueDoesNotExist);
    }
    let name = checked_name(req.queue_name)?;
    Ok(sqs_json(&json!({"QueueUrl": queue_url(ctx, &name)})))
}

async fn create_queue(
    state: &AppState,
    ctx: &Ctx,
    req: Result<QueueNameRequest, SqsError>,
) -> Result<Resp, SqsError> {
    let name = checked_name(req?.queue_name)?;
    state.queue.create_queue(&ctx.account, &name).await?;
    Ok(sqs_json(&json!({"QueueUrl": queue_url(ctx, &name)})))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListQueuesRequest {
    queue_name_prefix: Option<String>,
}

async fn list_queues(
    state: &AppState,
    ctx: &Ctx,
    req: Result<ListQueuesRequest, SqsError>,
) -> Result<Resp, SqsError> {
    let prefix = req?.queue_name_prefix.unwrap_or_default();
    let urls: Vec<String> = state
        .queue
        .list_queues(&ctx.account, &prefix)
        .await?
        .iter()
        .take(1000)
        .map(|n| queue_url(ctx, n))
        .collect();
    Ok(sqs_json(&if urls.is_empty() {
        json!({})
    } else {
        json!({"QueueUrls": urls})
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueueUrlRequest {
    queue_url: Option<String>,
    #[serde(default)]
    attribute_names: Vec<String>,
}

async fn get_queue_attributes(
    state: &AppState,
    ctx: &Ctx,
    req: Result<QueueUrlRequest, SqsError>,
) -> Result<Resp, SqsError> {
    let req = req?;
    let name = queue_name(ctx, req.queue_url.as_deref())?;
    let (visible, hidden, created) = state.queue.queue_counts(&ctx.account, &name).await?;
    let created_s = (created.unwrap_or_else(crate::model::time::now_ms) / 1000).to_string();
    let all: [(&str, String); 7] = [
        ("ApproximateNumberOfMessages", visible.to_string()),
        ("ApproximateNumberOfMessagesNotVisible", hidden.to_string()),
        ("ApproximateNumberOfMessagesDelayed", "0".into()),
        ("VisibilityTimeout", DEFAULT_VISIBILITY_S.to_string()),
        ("CreatedTimestamp", created_s.clone()),
        ("LastModifiedTimestamp", created_s),
        (
            "QueueArn",
            format!("arn:aws:sqs:{}:{}:{name}", state.region, ctx.account),
        ),
    ];
    let want = |n: &str| req.attribute_names.iter().any(|a| a == "All" || a == n);
    let attrs: BTreeMap<&str, String> = all.into_iter().filter(|(n, _)| want(n)).collect();
    Ok(sqs_json(&if attrs.is_empty() {
        json!({})
    } else {
        json!({"Attributes": attrs})
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveRequest {
    queue_url: Option<String>,
    max_number_of_messages: Option<i64>,
    visibility_timeout: Option<i64>,
    wait_time_seconds: Option<i64>,
    #[serde(default)]
    attribute_names: Vec<String>,
    #[serde(default)]
    message_system_attribute_names: Vec<String>,
    #[serde(default)]
    message_attribute_names: Vec<String>,
}

fn bounded(name: &str, v: Option<i64>, default: u64, max: u64, min: u64) -> Result<u64, SqsError> {
    match v {
        None => Ok(default),
        Some(v) if v >= min as i64 && v <= max as i64 => Ok(v as u64),
        Some(v) => Err(SqsError::InvalidParameterValue(format!(
            "Value {v} for parameter {name} is invalid. Reason: Must be between {min} and {max}, if provided."
        ))),
    }
}

async fn receive_message(
    state: &AppState,
    ctx: &Ctx,
    req: Result<ReceiveRequest, SqsError>,
) -> Result<Resp, SqsError> {
    let req = req?;
    let name = queue_name(ctx, req.queue_url.as_deref())?;
    let max = bounded(
        "MaxNumberOfMessages",
        req.max_number_of_messages,
        1,
        MAX_MESSAGES as u64,
        1,
    )? as usize;
    let visibility = bounded(
        "VisibilityTimeout",
        req.visibility_timeout,
        DEFAULT_VISIBILITY_S,
        MAX_VISIBILITY_S,
        0,
    )?;
    let wait = bounded("WaitTimeSeconds", req.wait_time_seconds, 0, MAX_WAIT_S, 0)?;
    let messages = state
        .queue
        .receive(
            &ctx.account,
            &name,
            max,
            Duration::from_secs(visibility),
            Duration::from_secs(wait),
        )
        .await?;
    let system: Vec<&str> = req
        .attribute_names
        .iter()
        .chain(&req.message_system_attribute_names)
        .map(String::as_str)
        .collect();
    let out: Vec<Value> = messages
        .iter()
        .map(|m| render_message(ctx, m, &system, &req.message_attribute_names))
        .collect();
    Ok(sqs_json(&if out.is_empty() {
        json!({})
    } else {
        json!({"Messages": out})
    }))
}

fn render_message(ctx: &Ctx, m: &ReceivedMessage, system: &[&str], wanted: &[String]) -> Value {
    let mut v = json!({
        "MessageId": m.message_id,
        "ReceiptHandle": m.receipt,
        "MD5OfBody": hex::encode(md5(m.body.as_bytes())),
        "Body": m.body,
    });
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    let sys: [(&str, String); 4] = [
        ("SenderId", ctx.account.clone()),
        ("SentTimestamp", m.sent_ms.to_string()),
        ("ApproximateReceiveCount", m.receive_count.to_string()),
        (
            "ApproximateFirstReceiveTimestamp",
            m.first_receive_ms.to_string(),
        ),
    ];
    let sys: BTreeMap<&str, String> = sys
        .into_iter()
        .filter(|(n, _)| system.iter().any(|a| *a == "All" || a == n))
        .collect();
    if !sys.is_empty() {
        obj.insert("Attributes".into(), json!(sys));
    }
    let attrs: BTreeMap<&String, &MessageAttribute> = m
        .attributes
        .iter()
        .filter(|(n, _)| {
            wanted.iter().any(|w| {
                w == "All"
                    || w == ".*"
                    || *w == **n
                    || w.strip_suffix(".*").is_some_and(|p| n.starts_with(p))
            })
        })
        .collect();
    if !attrs.is_empty() {
        obj.insert(
            "MD5OfMessageAttributes".into(),
            json!(hex::encode(md5(&attributes_digest_input(&attrs)))),
        );
        let rendered: BTreeMap<&String, Value> = attrs
            .iter()
            .map(|(n, a)| {
                (
                    *n,
                    json!({"DataType": a.data_type, "StringValue": a.string_value}),
                )
            })
            .collect();
        obj.insert("MessageAttributes".into(), json!(rendered));
    }
    v
}

/// SQS's encoding of message attributes for `MD5OfMessageAttributes`: per attribute in name
/// order, the length-prefixed (u32, big-endian) name and data type, the transport byte
/// (1: string value), then the length-prefixed value.
fn attributes_digest_input(attrs: &BTreeMap<&String, &MessageAttribute>) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut out = Vec::new();
    for (name, a) in attrs {
        field(&mut out, name.as_bytes());
        field(&mut out, a.data_type.as_bytes());
        out.push(1);
        field(&mut out, a.string_value.as_bytes());
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteRequest {
    queue_url: Option<String>,
    receipt_handle: Option<String>,
}

fn check_receipt(receipt: Option<String>) -> Result<String, SqsError> {
    let r = receipt.ok_or_else(|| {
        SqsError::MissingParameter("The request must contain the parameter ReceiptHandle.".into())
    })?;
    if r.len() == 64 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(r)
    } else {
        Err(SqsError::ReceiptHandleIsInvalid(r))
    }
}

async fn delete_message(
    state: &AppState,
    ctx: &Ctx,
    req: Result<DeleteRequest, SqsError>,
) -> Result<Resp, SqsError> {
    let req = req?;
    let name = queue_name(ctx, req.queue_url.as_deref())?;
    let receipt = check_receipt(req.receipt_handle)?;
    // Deleting an already deleted message succeeds, as on SQS.
    state
        .queue
        .delete_message(&ctx.account, &name, &receipt)
        .await?;
    Ok(sqs_json(&json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchEntry {
    id: String,
    receipt_handle: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteBatchRequest {
    queue_url: Option<String>,
    #[serde(default)]
    entries: Vec<BatchEntry>,
}

async fn delete_message_batch(
    state: &AppState,
    ctx: &Ctx,
    req: Result<DeleteBatchRequest, SqsError>,
) -> Result<Resp, SqsError> {
    let req = req?;
    let name = queue_name(ctx, req.queue_url.as_deref())?;
    if req.entries.is_empty() || req.entries.len() > 10 {
        return Err(SqsError::InvalidParameterValue(
            "A batch request must contain between 1 and 10 entries.".into(),
        ));
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for e in req.entries {
        match check_receipt(e.receipt_handle) {
            Ok(r) => {
                state.queue.delete_message(&ctx.account, &name, &r).await?;
                ok.push(json!({"Id": e.id}));
            }
            Err(err) => failed.push(json!({"Id": e.id, "SenderFault": true, "Code": "ReceiptHandleIsInvalid", "Message": err.to_string()})),
        }
    }
    Ok(sqs_json(&json!({"Successful": ok, "Failed": failed})))
}

async fn purge_queue(
    state: &AppState,
    ctx: &Ctx,
    req: Result<QueueUrlRequest, SqsError>,
) -> Result<Resp, SqsError> {
    let name = queue_name(ctx, req?.queue_url.as_deref())?;
    state.queue.purge(&ctx.account, &name).await?;
    Ok(sqs_json(&json!({})))
}

/// MD5 (RFC 1321), for SQS's `MD5OfBody` checksums; no other use.
fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i: i32| ((f64::from(i) + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    for chunk in msg.chunks_exact(64) {
        let m: Vec<u32> = chunk
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        state[0] = state[0].wrapping_add(a);
        state[1] = state[1].wrapping_add(b);
        state[2] = state[2].wrapping_add(c);
        state[3] = state[3].wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, word) in state.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_rfc_1321() {
        let cases: [(&str, &str); 4] = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(hex::encode(md5(input.as_bytes())), want, "{input}");
        }
    }

    fn ctx() -> Ctx {
        Ctx {
            account: "123456789012".into(),
            request_id: "r".into(),
            host: "127.0.0.1:9700".into(),
        }
    }

    #[test]
    fn queue_urls_name_a_queue_of_the_callers_account() {
        let c = ctx();
        assert_eq!(
            queue_url(&c, "dlq"),
            "http://127.0.0.1:9700/123456789012/dlq"
        );
        assert_eq!(
            queue_name(&c, Some("http://127.0.0.1:9700/123456789012/dlq")).unwrap(),
            "dlq"
        );
        assert_eq!(
            queue_name(
                &c,
                Some("https://sqs.us-east-1.amazonaws.com/123456789012/dlq")
            )
            .unwrap(),
            "dlq"
        );
        assert!(matches!(
            queue_name(&c, Some("http://h/999999999999/dlq")),
            Err(SqsError::QueueDoesNotExist)
        ));
        assert!(matches!(
            queue_name(&c, None),
            Err(SqsError::MissingParameter(_))
        ));
    }

    #[test]
    fn errors_have_sqs_json_shape() {
        let r = SqsError::QueueDoesNotExist.into_response("r");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            r.headers()["x-amzn-query-error"],
            "AWS.SimpleQueueService.NonExistentQueue;Sender"
        );
        assert_eq!(r.headers()[CONTENT_TYPE], "application/x-amz-json-1.0");
    }
}
