//! The functions the harness deploys, as deployment packages built in memory: a no-op per
//! runtime (the `lambda_runtime` binary for `provided.al2023`, a Python and a Node handler)
//! and a Python sleeper for scale-out and density.

use std::io::{Cursor, Write};
use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;
use zip::write::SimpleFileOptions;

use crate::client::FunctionSpec;

/// Timeouts long enough that a loaded 2-core machine never turns a slow start into a timeout
/// error.
const TIMEOUT_S: u32 = 30;

const PYTHON_NOOP: &str = "def handler(event, context):\n    return None\n";
const NODE_NOOP: &str = "exports.handler = async () => null;\n";
/// Sleeps `event["sleep_ms"]` milliseconds: keeps an environment busy so concurrent invokes
/// each get their own.
const PYTHON_SLEEPER: &str = "import time\n\n\ndef handler(event, context):\n    ms = event.get(\"sleep_ms\", 0) if isinstance(event, dict) else 0\n    if ms:\n        time.sleep(ms / 1000)\n    return None\n";

/// The three runtimes issue 5 measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Runtime {
    Provided,
    Python,
    Node,
}

impl Runtime {
    pub(crate) const ALL: [Runtime; 3] = [Runtime::Provided, Runtime::Python, Runtime::Node];

    pub(crate) fn id(self) -> &'static str {
        match self {
            Runtime::Provided => "provided.al2023",
            Runtime::Python => "python3.11",
            Runtime::Node => "nodejs20.x",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Runtime::Provided => "provided",
            Runtime::Python => "python",
            Runtime::Node => "node",
        }
    }
}

/// Packages built once per run.
pub(crate) struct Packages {
    memory_mb: u32,
    provided: Bytes,
    python: Bytes,
    node: Bytes,
    sleeper: Bytes,
}

impl Packages {
    /// `noop_bin` is the built `nimbus-bench-noop`, shipped (stripped) as the zip's `bootstrap`.
    /// Every function gets `memory_mb` of MemorySize (which also sets its CPU share).
    pub(crate) fn build(noop_bin: &Path, memory_mb: u32) -> anyhow::Result<Packages> {
        let bootstrap = stripped(noop_bin)?;
        Ok(Packages {
            memory_mb,
            provided: zip_of(&[("bootstrap", &bootstrap, 0o755)])?,
            python: zip_of(&[("index.py", PYTHON_NOOP.as_bytes(), 0o644)])?,
            node: zip_of(&[("index.js", NODE_NOOP.as_bytes(), 0o644)])?,
            sleeper: zip_of(&[("index.py", PYTHON_SLEEPER.as_bytes(), 0o644)])?,
        })
    }

    /// The no-op function of `runtime`, named `name`.
    pub(crate) fn noop(&self, runtime: Runtime, name: &str) -> FunctionSpec {
        let (zip, handler) = match runtime {
            Runtime::Provided => (&self.provided, "bootstrap"),
            Runtime::Python => (&self.python, "index.handler"),
            Runtime::Node => (&self.node, "index.handler"),
        };
        FunctionSpec {
            name: name.to_string(),
            runtime: runtime.id(),
            handler,
            zip: zip.clone(),
            timeout_s: TIMEOUT_S,
            memory_mb: self.memory_mb,
        }
    }

    /// The Python sleeper (payload `{"sleep_ms": N}`), named `name`.
    pub(crate) fn sleeper(&self, name: &str) -> FunctionSpec {
        FunctionSpec {
            name: name.to_string(),
            runtime: Runtime::Python.id(),
            handler: "index.handler",
            zip: self.sleeper.clone(),
            timeout_s: TIMEOUT_S,
            memory_mb: self.memory_mb,
        }
    }
}

/// The binary without symbols and debug info, as `cargo lambda` and AWS's guides deploy it:
/// the workspace's release profile keeps line tables (for profiling the server), which makes
/// the no-op 18 MB instead of ~3 MB and every CreateFunction of it slow. Falls back to the
/// binary as built when binutils' `strip` is missing.
fn stripped(bin: &Path) -> anyhow::Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("bootstrap");
    let ok = std::process::Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    let path = if ok { out.as_path() } else { bin };
    std::fs::read(path)
        .with_context(|| format!("cannot read the no-op bootstrap {}", path.display()))
}

fn zip_of(files: &[(&str, &[u8], u32)]) -> anyhow::Result<Bytes> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data, mode) in files {
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        w.start_file(*name, opts)?;
        w.write_all(data)?;
    }
    Ok(Bytes::from(w.finish()?.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_keep_the_bootstrap_executable() {
        let z = zip_of(&[("bootstrap", b"#!/bin/sh\n", 0o755)]).expect("zips");
        let mut archive = zip::ZipArchive::new(Cursor::new(z.to_vec())).expect("reads back");
        let f = archive.by_name("bootstrap").expect("has bootstrap");
        assert_eq!(f.unix_mode().map(|m| m & 0o777), Some(0o755));
    }
}
