//! The binaries a run needs — `nimbus` and the no-op `provided` function — built with cargo
//! (release profile, this workspace) unless given on the command line, and found through
//! cargo's own artifact messages rather than a guessed `target/` path.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::args::BenchArgs;

pub(crate) struct Binaries {
    pub(crate) nimbus: PathBuf,
    pub(crate) noop: PathBuf,
}

/// The workspace root: this crate lives in `<root>/bench`.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub(crate) fn locate(args: &BenchArgs) -> anyhow::Result<Binaries> {
    let mut packages = Vec::new();
    if args.nimbus_bin.is_none() {
        packages.push(("nimbus", "nimbus"));
    }
    if args.noop_bin.is_none() {
        packages.push(("nimbus-bench-noop", "nimbus-bench-noop"));
    }
    let mut built = if packages.is_empty() {
        Vec::new()
    } else {
        cargo_build(&packages)?
    };
    let mut take = |given: &Option<PathBuf>, bin: &str| -> anyhow::Result<PathBuf> {
        if let Some(p) = given {
            if !p.is_file() {
                bail!("{} is not a file", p.display());
            }
            return Ok(p.clone());
        }
        let i = built
            .iter()
            .position(|(name, _)| name == bin)
            .with_context(|| format!("cargo built no `{bin}` executable"))?;
        Ok(built.swap_remove(i).1)
    };
    Ok(Binaries {
        nimbus: take(&args.nimbus_bin, "nimbus")?,
        noop: take(&args.noop_bin, "nimbus-bench-noop")?,
    })
}

/// `cargo build --release -p …`; returns (binary name, path) of the executables built.
fn cargo_build(packages: &[(&str, &str)]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "--release",
        "--message-format=json-render-diagnostics",
    ]);
    for (package, _) in packages {
        cmd.args(["-p", package]);
    }
    eprintln!(
        "nimbus-bench: cargo build --release {}",
        packages
            .iter()
            .map(|(p, _)| format!("-p {p}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run cargo")?;
    let mut found = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            if let Some(hit) = executable_of(&line, packages) {
                found.push(hit);
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo build failed ({status}); see its messages above");
    }
    Ok(found)
}

/// A `compiler-artifact` message naming one of the wanted binaries → (name, path).
fn executable_of(line: &str, packages: &[(&str, &str)]) -> Option<(String, PathBuf)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["reason"] != "compiler-artifact" {
        return None;
    }
    let name = v["target"]["name"].as_str()?;
    let exe = v["executable"].as_str()?;
    packages
        .iter()
        .any(|(_, bin)| *bin == name)
        .then(|| (name.to_string(), PathBuf::from(exe)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_come_from_artifact_messages() {
        let wanted = [("nimbus", "nimbus")];
        let line = r#"{"reason":"compiler-artifact","target":{"name":"nimbus","kind":["bin"]},"executable":"/w/target/release/nimbus"}"#;
        assert_eq!(
            executable_of(line, &wanted),
            Some(("nimbus".into(), PathBuf::from("/w/target/release/nimbus")))
        );
        let lib = r#"{"reason":"compiler-artifact","target":{"name":"nimbus","kind":["lib"]},"executable":null}"#;
        assert_eq!(executable_of(lib, &wanted), None);
        assert_eq!(
            executable_of(r#"{"reason":"build-finished"}"#, &wanted),
            None
        );
    }
}
