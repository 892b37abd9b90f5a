//! `nimbus logs NAME [--follow]`: prints a function's log, and with `--follow` keeps
//! printing new lines as they arrive.
//!
//! Each poll asks FilterLogEvents for the events from the newest millisecond already printed
//! (skipping, by `eventId`, those of that millisecond it has printed). The server turns that
//! time into a byte offset in each stream by binary search, so a poll reads what was appended
//! since the last one, however long the streams are.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use serde_json::json;

use super::client::Client;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Function name.
    pub name: String,
    /// Keep printing new log lines.
    #[arg(long, short)]
    pub follow: bool,
    /// Only lines of the last N minutes.
    #[arg(long)]
    pub since_minutes: Option<u64>,
}

pub async fn run(client: &Client, a: LogsArgs) -> anyhow::Result<()> {
    let group = format!("/aws/lambda/{}", a.name);
    let mut start = a
        .since_minutes
        .map(|m| crate::model::time::now_ms().saturating_sub(m * 60_000))
        .unwrap_or(0);
    // Events at the newest timestamp already printed, so a poll starting there skips them.
    let mut seen_at_start: HashSet<String> = HashSet::new();
    loop {
        let mut token: Option<String> = None;
        let mut newest = start;
        let mut seen_now = HashSet::new();
        loop {
            let mut q = json!({"logGroupName": group, "startTime": start});
            if let (Some(t), Some(obj)) = (&token, q.as_object_mut()) {
                obj.insert("nextToken".into(), json!(t));
            }
            let page = match client.logs("FilterLogEvents", q).await {
                Ok(p) => p,
                Err(e) if a.follow && e.to_string().contains("ResourceNotFound") => json!({}),
                Err(e) => return Err(e),
            };
            let mut out = std::io::stdout().lock();
            for e in page["events"].as_array().into_iter().flatten() {
                let id = e["eventId"].as_str().unwrap_or("").to_string();
                let ts = e["timestamp"].as_u64().unwrap_or(0);
                if ts == start && seen_at_start.contains(&id) {
                    continue;
                }
                writeln!(out, "{}", e["message"].as_str().unwrap_or(""))?;
                if ts > newest {
                    newest = ts;
                    seen_now.clear();
                }
                if ts == newest {
                    seen_now.insert(id);
                }
            }
            out.flush()?;
            match page["nextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        if newest > start {
            start = newest;
            seen_at_start = seen_now;
        } else {
            seen_at_start.extend(seen_now);
        }
        if !a.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
