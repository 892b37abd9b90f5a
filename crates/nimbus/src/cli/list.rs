//! `nimbus list`: every function, one line each.

use std::io::Write;

use super::client::Client;

pub async fn run(client: &Client) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<40} {:<16} {:>7} {:>7}  LAST MODIFIED",
        "NAME", "RUNTIME", "MEMORY", "TIMEOUT"
    )?;
    let mut marker: Option<String> = None;
    loop {
        let query = match &marker {
            Some(m) => format!("Marker={}", super::client::segment(m)),
            None => String::new(),
        };
        let page = client
            .lambda("GET", "/2015-03-31/functions", &query, None)
            .await?
            .json()?;
        for f in page["Functions"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "{:<40} {:<16} {:>5}MB {:>6}s  {}",
                f["FunctionName"].as_str().unwrap_or(""),
                f["Runtime"].as_str().unwrap_or(""),
                f["MemorySize"],
                f["Timeout"],
                f["LastModified"].as_str().unwrap_or("")
            )?;
        }
        match page["NextMarker"].as_str() {
            Some(m) => marker = Some(m.to_string()),
            None => return Ok(()),
        }
    }
}
