//! A test function for the end-to-end suite, built with the official `lambda_runtime` crate
//! and deployed as the `bootstrap` of a `provided.al2023` function.
//!
//! The event chooses the behaviour:
//! - `{"echo": X}` returns X together with the context the runtime received (request id,
//!   function name, version, memory, ARN, log group and stream, deadline, remaining time,
//!   client context), the process id and an invocation counter;
//! - `{"sleep_ms": N}` sleeps N milliseconds, then returns `{"slept_ms": N}`;
//! - `{"error": "msg"}` fails the invocation (the crate posts `/error`);
//! - `{"exit": code}` exits the process in the middle of the invocation;
//! - `{"print": "line" | ["line", ...]}` prints the lines to stdout, then returns them;
//! - `{"env": true}` returns the process environment;
//! - anything else is returned unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Value, json};

static COUNT: AtomicU64 = AtomicU64::new(0);

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let (payload, ctx) = event.into_parts();
    let count = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(x) = payload.get("echo") {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        return Ok(json!({
            "echo": x,
            "request_id": ctx.request_id,
            "function_name": std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(),
            "function_version": ctx.env_config.version,
            "memory_limit_in_mb": ctx.env_config.memory,
            "invoked_function_arn": ctx.invoked_function_arn,
            "log_group_name": ctx.env_config.log_group,
            "log_stream_name": ctx.env_config.log_stream,
            "deadline": ctx.deadline,
            "remaining_time_ms": ctx.deadline.saturating_sub(now_ms),
            "client_context": ctx.client_context,
            "pid": std::process::id(),
            "count": count,
        }));
    }
    if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(json!({
            "slept_ms": ms,
            "pid": std::process::id(),
            "log_stream_name": ctx.env_config.log_stream,
        }));
    }
    if let Some(msg) = payload.get("error") {
        let message = text(msg);
        return Err(Diagnostic {
            error_type: "TestError".to_owned(),
            error_message: message,
        });
    }
    if let Some(code) = payload.get("exit").and_then(Value::as_i64) {
        std::process::exit(i32::try_from(code).unwrap_or(1));
    }
    if let Some(print) = payload.get("print") {
        let lines: Vec<String> = match print {
            Value::Array(items) => items.iter().map(text).collect(),
            other => vec![text(other)],
        };
        for line in &lines {
            println!("{line}");
        }
        return Ok(json!({ "printed": lines }));
    }
    if payload.get("env").is_some() {
        let env: serde_json::Map<String, Value> = std::env::vars()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        return Ok(Value::Object(env));
    }
    Ok(payload)
}

/// A JSON string's text, or any other value's JSON.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(handle)).await
}
