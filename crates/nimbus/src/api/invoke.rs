//! Invoke — `POST /2015-03-31/functions/{F}/invocations`: `RequestResponse` (payload in,
//! payload out), `Event` (202, run in the background), `DryRun` (204); and the deprecated
//! InvokeAsync.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use super::functions::{resolve, resolve_for_invoke};
use super::{ApiError, ApiRequest, AppState, Ctx, Resp, empty, too_large};
use crate::invoke::InvokeRequest;
use crate::model::{function_arn, limits};

enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

/// The largest payload Invoke accepts for an `X-Amz-Invocation-Type` (the default is
/// `RequestResponse`; an invalid type is refused later, on its own).
pub fn payload_limit(invocation_type: Option<&str>) -> usize {
    match invocation_type {
        Some("Event") => limits::ASYNC_PAYLOAD_MAX,
        _ => limits::SYNC_PAYLOAD_MAX,
    }
}

pub async fn invoke(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let kind = match req.header("x-amz-invocation-type") {
        None | Some("RequestResponse") => InvocationType::RequestResponse,
        Some("Event") => InvocationType::Event,
        Some("DryRun") => InvocationType::DryRun,
        Some(other) => {
            return Err(ApiError::InvalidParameterValue(format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: \
                 Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            )));
        }
    };
    let want_tail = match req.header("x-amz-log-type") {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(ApiError::InvalidParameterValue(format!(
                "1 validation error detected: Value '{other}' at 'logType' failed to satisfy constraint: \
                 Member must satisfy enum value set: [None, Tail]"
            )));
        }
    };
    let limit = payload_limit(req.header("x-amz-invocation-type"));
    if req.body.len() > limit {
        return Err(too_large(limit, "InvokeFunction"));
    }
    let (r, function) = resolve_for_invoke(state, ctx, f, req.query("Qualifier"))?;
    let payload = if req.body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        if serde_json::from_slice::<serde::de::IgnoredAny>(&req.body).is_err() {
            return Err(ApiError::InvalidRequestContent(
                "Could not parse request body into json: Could not parse payload into json: \
                 the payload is not valid JSON"
                    .into(),
            ));
        }
        req.body.clone()
    };
    let client_context = match req.header("x-amz-client-context") {
        None => None,
        Some(b64) => Some(decode_client_context(b64)?),
    };
    let invoked_arn: Arc<str> = function_arn(
        &state.region,
        &ctx.account,
        &function.name,
        r.qualifier.as_deref(),
    )
    .into();
    let request = InvokeRequest {
        function,
        invoked_arn,
        request_id: ctx.request_id.as_str().into(),
        payload,
        client_context,
        want_log_tail: want_tail,
    };
    match kind {
        InvocationType::DryRun => Ok(with_version(
            empty(StatusCode::NO_CONTENT),
            &request.function.version,
        )),
        InvocationType::Event => {
            enqueue(
                state,
                ctx,
                &request.function.name,
                r.qualifier,
                request.payload,
            )
            .await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        InvocationType::RequestResponse => {
            let result = state.invoker.invoke(request).await?;
            let mut resp = Response::new(Full::new(result.payload));
            let h = resp.headers_mut();
            h.insert(
                CONTENT_TYPE,
                result
                    .content_type
                    .unwrap_or_else(|| HeaderValue::from_static("application/json")),
            );
            if result.function_error {
                h.insert(
                    "x-amz-function-error",
                    HeaderValue::from_static("Unhandled"),
                );
            }
            if let Some(tail) = result.log_tail {
                let b64 = base64::engine::general_purpose::STANDARD.encode(tail);
                if let Ok(v) = HeaderValue::from_str(&b64) {
                    h.insert("x-amz-log-result", v);
                }
            }
            Ok(with_version(resp, &result.executed_version))
        }
    }
}

fn with_version(mut resp: Resp, version: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(version) {
        resp.headers_mut().insert("x-amz-executed-version", v);
    }
    resp
}

fn decode_client_context(b64: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::InvalidParameterValue(
            "Client context must be a valid Base64-encoded JSON object.".into(),
        )
    };
    if b64.len() > 3583 {
        return Err(ApiError::InvalidParameterValue(
            "Client context must be at most 3583 bytes once Base64-encoded.".into(),
        ));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    if serde_json::from_str::<serde_json::Value>(&text).is_err() {
        return Err(bad());
    }
    Ok(text)
}

/// Stores an `Event` invocation in the durable queue; returns once it is committed, so the
/// 202 that follows means the event survives a crash. The request id stays the event's
/// through its retries.
async fn enqueue(
    state: &Arc<AppState>,
    ctx: &Ctx,
    function: &str,
    qualifier: Option<String>,
    payload: Bytes,
) -> Result<(), ApiError> {
    state
        .queue
        .enqueue(crate::queue::NewEvent {
            account: ctx.account.clone(),
            function: function.to_string(),
            qualifier,
            request_id: ctx.request_id.clone(),
            payload,
        })
        .await?;
    Ok(())
}

/// InvokeAsync (deprecated) — `POST /2014-11-13/functions/{F}/invoke-async` → 202
/// `{"Status": 202}`.
pub async fn invoke_async_legacy(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    if req.body.len() > limits::INVOKE_ASYNC_PAYLOAD_MAX {
        return Err(too_large(limits::INVOKE_ASYNC_PAYLOAD_MAX, "InvokeAsync"));
    }
    let (_, function) = resolve(state, ctx, f, None)?;
    let payload = if req.body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        req.body.clone()
    };
    enqueue(state, ctx, &function.name, None, payload).await?;
    Ok(super::json(
        StatusCode::ACCEPTED,
        &serde_json::json!({"Status": 202}),
    ))
}
