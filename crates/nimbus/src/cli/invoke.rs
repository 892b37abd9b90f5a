//! `nimbus invoke NAME [--payload JSON]`: runs a function and prints its answer.

use std::io::Write;

use base64::Engine;

use super::client::{Client, segment};

#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// Function name or ARN (optionally `:qualifier`).
    pub name: String,
    /// The event, as JSON.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// Run asynchronously (`Event`): returns once the event is accepted.
    #[arg(long)]
    pub r#async: bool,
    /// Also print the invocation's log (to stderr).
    #[arg(long)]
    pub logs: bool,
}

/// Returns whether the function succeeded.
pub async fn run(client: &Client, a: InvokeArgs) -> anyhow::Result<bool> {
    let mut headers = vec![(
        "x-amz-invocation-type",
        if a.r#async {
            "Event"
        } else {
            "RequestResponse"
        }
        .to_string(),
    )];
    if a.logs {
        headers.push(("x-amz-log-type", "Tail".to_string()));
    }
    let answer = client
        .call(
            "POST",
            &format!("/2015-03-31/functions/{}/invocations", segment(&a.name)),
            "",
            &headers,
            a.payload.clone().into_bytes(),
            "lambda",
        )
        .await?;
    if !answer.status.is_success() {
        answer.json()?;
        return Ok(false);
    }
    if let Some(log) = answer.header("x-amz-log-result")
        && let Ok(text) = base64::engine::general_purpose::STANDARD.decode(log)
    {
        std::io::stderr().write_all(&text)?;
    }
    if a.r#async {
        writeln!(std::io::stdout(), "accepted (202)")?;
        return Ok(true);
    }
    let failed = answer.header("x-amz-function-error").is_some();
    let mut out: Box<dyn Write> = if failed {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    out.write_all(&answer.body)?;
    out.write_all(b"\n")?;
    Ok(!failed)
}
