//! GetAccountSettings, and Nimbus's own status and metrics endpoints.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::json;

use super::{AppState, Ctx, Resp, json};

/// Lambda's account quotas (lambda-wire.md §1.17, §4.6).
const TOTAL_CODE_SIZE: u64 = 80_530_636_800;

/// GetAccountSettings — `GET /2016-08-19/account-settings` → 200.
pub fn settings(state: &Arc<AppState>, ctx: &Ctx) -> Resp {
    let (count, code) = state.store.usage(&ctx.account);
    let limit = state.invoker.config().concurrency_limit;
    let unreserved = limit.saturating_sub(state.store.reserved_total(&ctx.account));
    json(
        StatusCode::OK,
        &json!({
            "AccountLimit": {
                "TotalCodeSize": TOTAL_CODE_SIZE,
                "CodeSizeUnzipped": crate::model::limits::UNZIPPED_MAX,
                "CodeSizeZipped": crate::model::limits::ZIP_MAX,
                "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": unreserved,
            },
            "AccountUsage": {"TotalCodeSize": code, "FunctionCount": count},
        }),
    )
}

/// `GET /nimbus/status` (signed): environments per function and concurrency in use.
pub fn status(state: &Arc<AppState>, ctx: &Ctx) -> Resp {
    let functions: Vec<_> = state
        .invoker
        .concurrency
        .snapshot()
        .into_iter()
        .filter(|(a, _, _, _)| *a == ctx.account)
        .map(|(_, name, in_flight, throttles)| {
            json!({"FunctionName": name, "ConcurrentExecutions": in_flight, "Throttles": throttles})
        })
        .collect();
    let pools: Vec<_> = state
        .invoker
        .pools()
        .counts()
        .into_iter()
        .filter(|(k, _, _)| k.account == ctx.account)
        .map(|(k, idle, busy)| {
            let usage = state.invoker.usage.get(&k.account, &k.function);
            json!({
                "FunctionName": k.function,
                "Version": k.version,
                "IdleEnvironments": idle,
                "BusyEnvironments": busy,
                "Invocations": usage.invocations,
                "Errors": usage.errors,
                "BilledMilliseconds": usage.billed_ms,
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &json!({
            "ConcurrentExecutions": state.invoker.in_flight(),
            "ConcurrencyLimit": state.invoker.config().concurrency_limit,
            "Pools": pools,
            "Functions": functions,
            "AsyncInvocations": state.queue.status_json(&ctx.account),
        }),
    )
}

/// `GET /nimbus/metrics`: Prometheus text.
pub fn metrics(state: &Arc<AppState>) -> Resp {
    let mut out = String::new();
    state.invoker.usage.render(&mut out);
    state.queue.render_metrics(&mut out);
    out.push_str(&format!(
        "# HELP nimbus_concurrent_executions Invocations running now\n# TYPE nimbus_concurrent_executions gauge\nnimbus_concurrent_executions {}\n",
        state.invoker.in_flight()
    ));
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(out)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
