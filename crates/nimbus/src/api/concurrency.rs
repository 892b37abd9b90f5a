//! Reserved concurrency (Put/Get/DeleteFunctionConcurrency) and provisioned concurrency
//! (Put/Get/Delete/ListProvisionedConcurrencyConfig(s)).

use std::sync::Arc;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::functions::parse_ref;
use super::versions::page;
use super::{ApiError, ApiRequest, AppState, Ctx, Resp, empty, json, parse_body};
use crate::invoke::ProvisionedTarget;
use crate::model::time::{lambda_timestamp, now_ms};
use crate::model::{FunctionRef, LATEST, function_arn, is_version_number};
use crate::store::{FunctionEntry, ProvisionedConfig};

fn entry(state: &AppState, ctx: &Ctx, r: &FunctionRef) -> Result<FunctionEntry, ApiError> {
    state.store.entry(&ctx.account, &r.name).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Function not found: {}",
            function_arn(&state.region, &ctx.account, &r.name, None)
        ))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutReserved {
    reserved_concurrent_executions: Option<i64>,
}

/// Tells the invoker a function's reservation and its account's total.
pub fn apply_reserved(state: &AppState, account: &str, name: &str, reserved: Option<u32>) {
    let total = state.store.reserved_total(account);
    state
        .invoker
        .concurrency
        .set_reserved(account, name, reserved, total);
}

/// PutFunctionConcurrency — `PUT /2017-10-31/functions/{F}/concurrency` → 200.
pub fn put_reserved(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let body: PutReserved = parse_body(&req.body)?;
    let r = parse_ref(state, ctx, f, None)?;
    let e = entry(state, ctx, &r)?;
    let n = body.reserved_concurrent_executions.ok_or_else(|| {
        ApiError::InvalidParameterValue("ReservedConcurrentExecutions is required.".into())
    })?;
    let limit = state.invoker.concurrency.limit();
    if n < 0 || n > i64::from(limit) {
        return Err(ApiError::InvalidParameterValue(format!(
            "1 validation error detected: Value '{n}' at 'reservedConcurrentExecutions' failed to satisfy constraint: \
             Member must have value greater than or equal to 0"
        )));
    }
    let n = n as u32;
    let others = state.store.reserved_total(&ctx.account) - e.reserved.unwrap_or(0);
    let min_unreserved = state.invoker.concurrency.minimum_unreserved();
    if others + n > limit.saturating_sub(min_unreserved) {
        return Err(ApiError::InvalidParameterValue(format!(
            "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{min_unreserved}]."
        )));
    }
    state.store.set_reserved(&ctx.account, &r.name, Some(n))?;
    apply_reserved(state, &ctx.account, &r.name, Some(n));
    Ok(json(
        StatusCode::OK,
        &json!({"ReservedConcurrentExecutions": n}),
    ))
}

/// GetFunctionConcurrency — `GET /2019-09-30/functions/{F}/concurrency` → 200.
pub fn get_reserved(state: &Arc<AppState>, ctx: &Ctx, f: &str) -> Result<Resp, ApiError> {
    let r = parse_ref(state, ctx, f, None)?;
    let e = entry(state, ctx, &r)?;
    Ok(json(
        StatusCode::OK,
        &match e.reserved {
            Some(n) => json!({"ReservedConcurrentExecutions": n}),
            None => json!({}),
        },
    ))
}

/// DeleteFunctionConcurrency — `DELETE /2017-10-31/functions/{F}/concurrency` → 204.
pub fn delete_reserved(state: &Arc<AppState>, ctx: &Ctx, f: &str) -> Result<Resp, ApiError> {
    let r = parse_ref(state, ctx, f, None)?;
    entry(state, ctx, &r)?;
    state.store.set_reserved(&ctx.account, &r.name, None)?;
    apply_reserved(state, &ctx.account, &r.name, None);
    Ok(empty(StatusCode::NO_CONTENT))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutProvisioned {
    provisioned_concurrent_executions: Option<i64>,
}

fn qualifier(r: &FunctionRef) -> Result<String, ApiError> {
    match r.qualifier.as_deref() {
        None => Err(ApiError::InvalidParameterValue(
            "1 validation error detected: Value null at 'qualifier' failed to satisfy constraint: Member must not be null"
                .into(),
        )),
        Some(LATEST) => Err(ApiError::InvalidParameterValue(
            "Provisioned Concurrency Configs cannot be applied to unpublished function versions.".into(),
        )),
        Some(q) => Ok(q.to_string()),
    }
}

fn render(
    state: &AppState,
    ctx: &Ctx,
    name: &str,
    q: &str,
    c: &ProvisionedConfig,
    with_arn: bool,
) -> Value {
    let st =
        state
            .invoker
            .provisioned_state(&(ctx.account.clone(), name.to_string(), q.to_string()));
    let allocated = st.allocated.min(c.requested);
    let (status, reason) = if allocated >= c.requested {
        ("READY", None)
    } else if let Some(f) = st.failure {
        ("FAILED", Some(f))
    } else {
        ("IN_PROGRESS", None)
    };
    // Our timestamps here are `Timestamp` strings without milliseconds, as Lambda's.
    let mut last = lambda_timestamp(c.last_modified_ms);
    if let Some(dot) = last.find('.') {
        last.replace_range(dot..dot + 4, "");
    }
    let mut v = json!({
        "RequestedProvisionedConcurrentExecutions": c.requested,
        "AllocatedProvisionedConcurrentExecutions": allocated,
        "AvailableProvisionedConcurrentExecutions": allocated,
        "Status": status,
        "LastModified": last,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(r) = reason {
            obj.insert("StatusReason".into(), json!(r));
        }
        if with_arn {
            obj.insert(
                "FunctionArn".into(),
                json!(function_arn(&state.region, &ctx.account, name, Some(q))),
            );
        }
    }
    v
}

/// The provisioned configurations of every function, resolved to versions, for the
/// invoker's reconciler.
pub fn provisioned_targets(state: &AppState) -> Vec<ProvisionedTarget> {
    let mut out = Vec::new();
    for e in state.store.all_entries() {
        for (q, c) in &e.provisioned {
            if let Some((config, _)) = e.qualified(Some(q)) {
                out.push(ProvisionedTarget {
                    key: (e.latest.account.clone(), e.latest.name.clone(), q.clone()),
                    config,
                    requested: c.requested,
                });
            }
        }
    }
    out
}

/// PutProvisionedConcurrencyConfig — `PUT /2019-09-30/functions/{F}/provisioned-concurrency?Qualifier=` → 202.
pub fn put_provisioned(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let body: PutProvisioned = parse_body(&req.body)?;
    let r = parse_ref(state, ctx, f, req.query("Qualifier"))?;
    let q = qualifier(&r)?;
    let e = entry(state, ctx, &r)?;
    if e.qualified(Some(&q)).is_none() {
        return Err(ApiError::ResourceNotFound(format!(
            "Function not found: {}",
            function_arn(&state.region, &ctx.account, &r.name, Some(&q))
        )));
    }
    let n = body.provisioned_concurrent_executions.ok_or_else(|| {
        ApiError::InvalidParameterValue("ProvisionedConcurrentExecutions is required.".into())
    })?;
    let limit = state.invoker.concurrency.limit();
    if n < 1 || n > i64::from(limit) {
        return Err(ApiError::InvalidParameterValue(format!(
            "1 validation error detected: Value '{n}' at 'provisionedConcurrentExecutions' failed to satisfy constraint: \
             Member must have value greater than or equal to 1"
        )));
    }
    if let Some(reserved) = e.reserved
        && n > i64::from(reserved)
    {
        return Err(ApiError::InvalidParameterValue(format!(
            "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function: {reserved}"
        )));
    }
    let c = ProvisionedConfig {
        requested: n as u32,
        last_modified_ms: now_ms(),
    };
    state
        .store
        .set_provisioned(&ctx.account, &r.name, &q, Some(c.clone()))?;
    state.reconcile_now.notify_one();
    Ok(json(
        StatusCode::ACCEPTED,
        &render(state, ctx, &r.name, &q, &c, false),
    ))
}

fn no_config() -> ApiError {
    ApiError::ProvisionedConcurrencyConfigNotFound(
        "No Provisioned Concurrency Config found for this function".into(),
    )
}

/// GetProvisionedConcurrencyConfig — `GET …/provisioned-concurrency?Qualifier=` → 200.
pub fn get_provisioned(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let r = parse_ref(state, ctx, f, req.query("Qualifier"))?;
    let q = qualifier(&r)?;
    let e = entry(state, ctx, &r)?;
    let c = e.provisioned.get(&q).ok_or_else(no_config)?;
    Ok(json(
        StatusCode::OK,
        &render(state, ctx, &r.name, &q, c, false),
    ))
}

/// DeleteProvisionedConcurrencyConfig — `DELETE …/provisioned-concurrency?Qualifier=` → 204.
pub fn delete_provisioned(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let r = parse_ref(state, ctx, f, req.query("Qualifier"))?;
    let q = qualifier(&r)?;
    let e = entry(state, ctx, &r)?;
    if !e.provisioned.contains_key(&q) {
        return Err(no_config());
    }
    state
        .store
        .set_provisioned(&ctx.account, &r.name, &q, None)?;
    state.reconcile_now.notify_one();
    Ok(empty(StatusCode::NO_CONTENT))
}

/// ListProvisionedConcurrencyConfigs — `GET …/provisioned-concurrency?List=ALL` → 200.
pub fn list_provisioned(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let r = parse_ref(state, ctx, f, None)?;
    let e = entry(state, ctx, &r)?;
    let items: Vec<(String, Value)> = e
        .provisioned
        .iter()
        .map(|(q, c)| {
            let key = if is_version_number(q) {
                format!("{q:0>10}")
            } else {
                q.clone()
            };
            (key, render(state, ctx, &r.name, q, c, true))
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &page(items, req, "ProvisionedConcurrencyConfigs")?,
    ))
}
