//! `nimbus deploy NAME DIR`: zips a directory and creates the function, or updates its code
//! and configuration if it exists.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use serde_json::json;

use super::client::{Client, segment};

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Function name.
    pub name: String,
    /// Directory holding the code (its contents become the zip's root).
    pub dir: PathBuf,
    /// Runtime id, e.g. python3.11, nodejs20.x, provided.al2023.
    #[arg(long)]
    pub runtime: String,
    /// Handler, e.g. app.handler (Python), index.handler (Node); any word for provided.
    #[arg(long, default_value = "handler")]
    pub handler: String,
    /// MemorySize in MB.
    #[arg(long)]
    pub memory: Option<u32>,
    /// Timeout in seconds.
    #[arg(long)]
    pub timeout: Option<u32>,
    /// Environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Execution role ARN (stored, as Lambda requires one).
    #[arg(long, default_value = "arn:aws:iam::000000000000:role/nimbus-function")]
    pub role: String,
}

/// Zips `dir`, keeping executable bits (a `bootstrap` must stay executable).
pub fn zip_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut buf);
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for p in files {
        let rel = p.strip_prefix(dir)?.to_string_lossy().into_owned();
        let mode = std::fs::metadata(&p)?.permissions().mode();
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode & 0o777);
        w.start_file(rel, opts)?;
        w.write_all(&std::fs::read(&p)?)?;
    }
    w.finish()?;
    Ok(buf.into_inner())
}

pub async fn run(client: &Client, a: DeployArgs) -> anyhow::Result<()> {
    let zip = zip_dir(&a.dir)?;
    let zip_b64 = base64::engine::general_purpose::STANDARD.encode(&zip);
    let mut vars = serde_json::Map::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env expects KEY=VALUE, got {kv}"))?;
        vars.insert(k.to_string(), json!(v));
    }
    let path = format!("/2015-03-31/functions/{}", segment(&a.name));
    let exists = client
        .lambda("GET", &path, "", None)
        .await?
        .status
        .is_success();
    let mut config = json!({
        "Runtime": a.runtime,
        "Handler": a.handler,
        "Role": a.role,
        "Environment": {"Variables": vars},
    });
    if let Some(obj) = config.as_object_mut() {
        if let Some(m) = a.memory {
            obj.insert("MemorySize".into(), json!(m));
        }
        if let Some(t) = a.timeout {
            obj.insert("Timeout".into(), json!(t));
        }
    }
    let out = if exists {
        client
            .lambda(
                "PUT",
                &format!("{path}/code"),
                "",
                Some(json!({"ZipFile": zip_b64})),
            )
            .await?
            .json()?;
        client
            .lambda("PUT", &format!("{path}/configuration"), "", Some(config))
            .await?
            .json()?
    } else {
        if let Some(obj) = config.as_object_mut() {
            obj.insert("FunctionName".into(), json!(a.name));
            obj.insert("Code".into(), json!({"ZipFile": zip_b64}));
        }
        client
            .lambda("POST", "/2015-03-31/functions", "", Some(config))
            .await?
            .json()?
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{} {} ({} bytes, CodeSha256 {})",
        if exists { "updated" } else { "created" },
        out["FunctionArn"].as_str().unwrap_or(&a.name),
        zip.len(),
        out["CodeSha256"].as_str().unwrap_or("?")
    )?;
    Ok(())
}
