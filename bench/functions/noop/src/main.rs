//! The benchmark's no-op function: the cheapest thing a `provided.al2023` function built with
//! the official `lambda_runtime` crate can do, so warm-invoke numbers measure the platform and
//! the runtime client, not the handler. Deployed as the `bootstrap` of the function's zip.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

async fn handle(_event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(Value::Null)
}

// A current-thread runtime: an environment runs one invocation at a time, so the crate's
// default multi-threaded runtime only adds hand-offs between its threads (~125 µs of CPU and
// ~8 futex calls per invoke on the benchmark machine, against ~50 µs here). This is how
// docs/functions.md recommends writing a `provided` function; `--noop-bin` measures any
// other build (docs/benchmarks.md has both).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handle)).await
}
