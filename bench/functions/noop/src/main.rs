//! The benchmark's no-op function: the cheapest thing a `provided.al2023` function built with
//! the official `lambda_runtime` crate can do, so warm-invoke numbers measure the platform and
//! the runtime client, not the handler. Deployed as the `bootstrap` of the function's zip.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

async fn handle(_event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(Value::Null)
}

// The default multi-threaded runtime, as in the crate's own examples: what users deploy.
#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handle)).await
}
