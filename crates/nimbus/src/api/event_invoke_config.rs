//! Asynchronous-invocation config (lambda-wire.md §1.10): Put / Update / Get / Delete /
//! List FunctionEventInvokeConfig(s) on `/2019-09-25/functions/{F}/event-invoke-config`
//! and `.../event-invoke-config/list`. The configs are kept and applied by the event queue
//! ([`crate::queue`]); this file validates requests into [`EventInvokeConfig`] and renders
//! the `FunctionEventInvokeConfig` shape (`LastModified` as epoch seconds, a JSON number).

use std::sync::Arc;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::functions::resolve;
use super::{ApiError, ApiRequest, AppState, Ctx, Resp, empty, json, parse_body};
use crate::model::time::now_ms;
use crate::model::{FunctionRef, LATEST, function_arn};
use crate::queue::invoke_config::{validate_event_age, validate_retry_attempts};
use crate::queue::{Destination, DestinationError, EventInvokeConfig, Target};

// The queue's storage failures are our faults: 500, detail in the log. (This mapping
// belongs with the others in error.rs.)
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigRequest {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationConfigWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationConfigWire {
    on_success: Option<DestinationWire>,
    on_failure: Option<DestinationWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationWire {
    destination: Option<String>,
}

/// The request, validated; `None` members were not given.
struct Change {
    retries: Option<u32>,
    max_age: Option<u32>,
    /// (on success, on failure), when `DestinationConfig` was given.
    destinations: Option<(Option<Destination>, Option<Destination>)>,
}

/// The function and qualifier a request is about; 404 "The function doesn't exist." if the
/// function or its qualifier is unknown (the wording Lambda uses for these operations).
fn target(
    state: &AppState,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<(String, String), ApiError> {
    match resolve(state, ctx, f, req.query("Qualifier")) {
        Ok((r, function)) => Ok((
            function.name.clone(),
            r.qualifier.unwrap_or_else(|| LATEST.to_string()),
        )),
        Err(ApiError::ResourceNotFound(_)) => Err(ApiError::ResourceNotFound(
            "The function doesn't exist.".into(),
        )),
        Err(e) => Err(e),
    }
}

/// Get and Delete say the config is missing, whether or not the function is.
fn target_or_missing(
    state: &AppState,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<(String, String), ApiError> {
    match resolve(state, ctx, f, req.query("Qualifier")) {
        Ok((r, function)) => Ok((
            function.name.clone(),
            r.qualifier.unwrap_or_else(|| LATEST.to_string()),
        )),
        Err(ApiError::ResourceNotFound(_)) => {
            let r = FunctionRef::parse(f)?.with_query_qualifier(req.query("Qualifier"))?;
            let q = r.qualifier.unwrap_or_else(|| LATEST.to_string());
            Err(missing(state, ctx, &r.name, &q))
        }
        Err(e) => Err(e),
    }
}

fn missing(state: &AppState, ctx: &Ctx, name: &str, qualifier: &str) -> ApiError {
    ApiError::ResourceNotFound(format!(
        "The function {} doesn't have an EventInvokeConfig",
        function_arn(&state.region, &ctx.account, name, Some(qualifier))
    ))
}

fn parse_change(
    state: &AppState,
    ctx: &Ctx,
    function: &str,
    body: ConfigRequest,
) -> Result<Change, ApiError> {
    if body.maximum_retry_attempts.is_none()
        && body.maximum_event_age_in_seconds.is_none()
        && body.destination_config.is_none()
    {
        return Err(ApiError::InvalidParameterValue(
            "You must specify at least one of error handling or destination setting.".into(),
        ));
    }
    let retries = body
        .maximum_retry_attempts
        .map(validate_retry_attempts)
        .transpose()?;
    let max_age = body
        .maximum_event_age_in_seconds
        .map(validate_event_age)
        .transpose()?;
    let destinations = match body.destination_config {
        None => None,
        Some(d) => {
            let success = d
                .on_success
                .and_then(|w| w.destination)
                .filter(|s| !s.is_empty());
            let failure = d
                .on_failure
                .and_then(|w| w.destination)
                .filter(|s| !s.is_empty());
            let check =
                |arn: &Option<String>, member: &str| -> Result<Option<Destination>, ApiError> {
                    arn.as_deref()
                        .map(|a| {
                            destination(
                                state,
                                ctx,
                                function,
                                a,
                                member,
                                success.as_deref(),
                                failure.as_deref(),
                            )
                        })
                        .transpose()
                };
            Some((check(&success, "onSuccess")?, check(&failure, "onFailure")?))
        }
    };
    Ok(Change {
        retries,
        max_age,
        destinations,
    })
}

/// Validates one destination ARN with Lambda's messages; refuses, with our own message,
/// what Lambda accepts but Nimbus cannot deliver to.
fn destination(
    state: &AppState,
    ctx: &Ctx,
    function: &str,
    arn: &str,
    member: &str,
    success: Option<&str>,
    failure: Option<&str>,
) -> Result<Destination, ApiError> {
    let invalid_config = || {
        let part = |kind: &str, d: Option<&str>| match d {
            Some(d) => format!("{kind}(destination={d})"),
            None => "null".to_string(),
        };
        ApiError::InvalidParameterValue(format!(
            "The provided destination config DestinationConfig(onSuccess={}, onFailure={}) is invalid.",
            part("OnSuccess", success),
            part("OnFailure", failure)
        ))
    };
    let d = match Destination::parse(arn) {
        Ok(d) => d,
        Err(DestinationError::Pattern) => {
            return Err(ApiError::InvalidParameterValue(format!(
                "1 validation error detected: Value '{arn}' at 'destinationConfig.{member}.destination' failed to satisfy constraint: \
                 Member must satisfy regular expression pattern: {}",
                crate::queue::destination::ARN_PATTERN
            )));
        }
        Err(DestinationError::Unsupported(service)) => {
            return Err(ApiError::InvalidParameterValue(format!(
                "The destination ARN {arn} is valid on AWS Lambda, but this Nimbus server does not deliver to {service} destinations. \
                 Use a function ARN or an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME names a built-in queue you can read with SQS's ReceiveMessage)."
            )));
        }
        Err(DestinationError::Invalid) => return Err(invalid_config()),
    };
    if d.account() != ctx.account {
        return Err(ApiError::InvalidParameterValue(format!(
            "The destination ARN {arn} is invalid: Nimbus delivers only to functions and queues of the caller's account."
        )));
    }
    if let Target::Function {
        name, qualifier, ..
    } = &d.target
    {
        if name == function {
            return Err(ApiError::InvalidParameterValue(
                "You can't specify the function as a destination for itself.".into(),
            ));
        }
        if resolve(state, ctx, name, qualifier.clone()).is_err() {
            return Err(ApiError::InvalidParameterValue(format!(
                "The destination ARN {arn} is invalid."
            )));
        }
    }
    Ok(d)
}

/// `FunctionEventInvokeConfig`; members that were not set are omitted.
fn render(
    state: &AppState,
    ctx: &Ctx,
    function: &str,
    qualifier: &str,
    c: &EventInvokeConfig,
) -> Value {
    let dest = |d: &Option<Destination>| match d {
        Some(d) => json!({"Destination": d.arn()}),
        None => json!({}),
    };
    let mut v = json!({
        "LastModified": c.last_modified_ms as f64 / 1000.0,
        "FunctionArn": function_arn(&state.region, &ctx.account, function, Some(qualifier)),
        "DestinationConfig": {"OnSuccess": dest(&c.on_success), "OnFailure": dest(&c.on_failure)},
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(r) = c.maximum_retry_attempts {
            obj.insert("MaximumRetryAttempts".into(), json!(r));
        }
        if let Some(a) = c.maximum_event_age_s {
            obj.insert("MaximumEventAgeInSeconds".into(), json!(a));
        }
    }
    v
}

/// PutFunctionEventInvokeConfig — `PUT .../event-invoke-config` → 200; replaces the config.
pub async fn put(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let body: ConfigRequest = parse_body(&req.body)?;
    let (function, qualifier) = target(state, ctx, req, f)?;
    let change = parse_change(state, ctx, &function, body)?;
    let (success, failure) = change.destinations.unwrap_or((None, None));
    let cfg = state
        .queue
        .change_invoke_config::<ApiError>(&ctx.account, &function, &qualifier, |_| {
            Ok(EventInvokeConfig {
                maximum_retry_attempts: change.retries,
                maximum_event_age_s: change.max_age,
                on_success: success,
                on_failure: failure,
                last_modified_ms: now_ms(),
            })
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &render(state, ctx, &function, &qualifier, &cfg),
    ))
}

/// UpdateFunctionEventInvokeConfig — `POST .../event-invoke-config` → 200; merges the
/// members given (a `DestinationConfig` replaces both destinations).
pub async fn update(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let body: ConfigRequest = parse_body(&req.body)?;
    let (function, qualifier) = target(state, ctx, req, f)?;
    let change = parse_change(state, ctx, &function, body)?;
    let cfg = state
        .queue
        .change_invoke_config::<ApiError>(&ctx.account, &function, &qualifier, |current| {
            let mut cfg = current
                .cloned()
                .ok_or_else(|| missing(state, ctx, &function, &qualifier))?;
            if let Some(r) = change.retries {
                cfg.maximum_retry_attempts = Some(r);
            }
            if let Some(a) = change.max_age {
                cfg.maximum_event_age_s = Some(a);
            }
            if let Some((success, failure)) = change.destinations {
                cfg.on_success = success;
                cfg.on_failure = failure;
            }
            cfg.last_modified_ms = now_ms();
            Ok(cfg)
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &render(state, ctx, &function, &qualifier, &cfg),
    ))
}

/// GetFunctionEventInvokeConfig — `GET .../event-invoke-config` → 200.
pub fn get(state: &Arc<AppState>, ctx: &Ctx, req: &ApiRequest, f: &str) -> Result<Resp, ApiError> {
    let (function, qualifier) = target_or_missing(state, ctx, req, f)?;
    let cfg = state
        .queue
        .invoke_config(&ctx.account, &function, &qualifier)
        .ok_or_else(|| missing(state, ctx, &function, &qualifier))?;
    Ok(json(
        StatusCode::OK,
        &render(state, ctx, &function, &qualifier, &cfg),
    ))
}

/// DeleteFunctionEventInvokeConfig — `DELETE .../event-invoke-config` → 204.
pub async fn delete(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let (function, qualifier) = target_or_missing(state, ctx, req, f)?;
    if !state
        .queue
        .delete_invoke_config(&ctx.account, &function, &qualifier)
        .await?
    {
        return Err(missing(state, ctx, &function, &qualifier));
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// ListFunctionEventInvokeConfigs — `GET .../event-invoke-config/list` → 200, at most 50
/// a page (`MaxItems` 1–50), `NextMarker` while more remain.
pub fn list(state: &Arc<AppState>, ctx: &Ctx, req: &ApiRequest, f: &str) -> Result<Resp, ApiError> {
    let max = match req.query("MaxItems") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=50).contains(m))
            .ok_or_else(|| {
                ApiError::InvalidParameterValue(format!(
                    "1 validation error detected: Value '{m}' at 'maxItems' failed to satisfy constraint: \
                     Member must have value less than or equal to 50"
                ))
            })?,
        None => 50,
    };
    let function = match resolve(state, ctx, f, None) {
        Ok((_, function)) => function.name.clone(),
        Err(ApiError::ResourceNotFound(_)) => {
            return Err(ApiError::ResourceNotFound(
                "The function doesn't exist.".into(),
            ));
        }
        Err(e) => return Err(e),
    };
    let all = state.queue.invoke_configs(&ctx.account, &function);
    let start = match req.query("Marker") {
        Some(m) => all
            .iter()
            .position(|(q, _)| q.as_str() > m.as_str())
            .unwrap_or(all.len()),
        None => 0,
    };
    let page: Vec<Value> = all[start..]
        .iter()
        .take(max)
        .map(|(q, c)| render(state, ctx, &function, q, c))
        .collect();
    let mut out = json!({"FunctionEventInvokeConfigs": page});
    if start + max < all.len()
        && let Some(obj) = out.as_object_mut()
    {
        obj.insert("NextMarker".into(), json!(all[start + max - 1].0));
    }
    Ok(json(StatusCode::OK, &out))
}
