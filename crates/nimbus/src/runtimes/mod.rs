//! The runtime catalog: which runtime ids exist and how an environment of each is started.
//!
//! Managed runtimes run on the host's interpreters with bootstraps of our own (the Runtime API
//! client, handler loading, context object), embedded in the binary and written to
//! `DATA/runtimes/<kind>/` at start, which environments see read-only at `/var/runtime`.
//! `provided*` runtimes run the function's own `bootstrap`. More ids (another Python, another
//! Node) are added by configuration, not code.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

const PYTHON_BOOTSTRAP: &str = include_str!("../../../../runtimes/python/bootstrap.py");
const PYTHON_RUNTIME: &str = include_str!("../../../../runtimes/python/_nimbus_bootstrap.py");
const PYTHON_ZYGOTE: &str = include_str!("../../../../runtimes/python/_nimbus_zygote.py");
const NODE_BOOTSTRAP: &str = include_str!("../../../../runtimes/node/bootstrap.js");

/// How a runtime starts its environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Our Python bootstrap on a host interpreter.
    Python,
    /// Our Node.js bootstrap on a host interpreter.
    Node,
    /// The function's own `bootstrap` executable.
    Provided,
}

/// One entry of the catalog, as configured.
#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeConfig {
    pub kind: RuntimeKind,
    /// The interpreter (absolute host path); unused for `provided`.
    #[serde(default)]
    pub interpreter: Option<PathBuf>,
    /// Host directories the interpreter needs, bound read-only into the jail at the same path.
    #[serde(default)]
    pub host_paths: Vec<PathBuf>,
}

/// A runtime ready to start environments.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub id: String,
    pub kind: RuntimeKind,
    /// Command line inside the environment.
    pub argv: Vec<String>,
    /// Host directory mounted at `/var/runtime`, if any.
    pub runtime_dir: Option<PathBuf>,
    pub host_paths: Vec<PathBuf>,
}

impl Runtime {
    /// `AWS_EXECUTION_ENV`; not set for custom runtimes.
    pub fn execution_env(&self) -> Option<String> {
        (self.kind != RuntimeKind::Provided).then(|| format!("AWS_Lambda_{}", self.id))
    }
}

/// All runtimes this server offers.
#[derive(Debug, Clone)]
pub struct Catalog {
    runtimes: BTreeMap<String, Runtime>,
}

/// The defaults: Debian's `/usr/bin/python3` (3.11) and `/usr/bin/node` (20), never a shim on
/// PATH (pyenv's costs ~130 ms per start), and the custom runtimes.
pub fn default_runtime_configs() -> BTreeMap<String, RuntimeConfig> {
    let mut m = BTreeMap::new();
    let usr = vec![
        PathBuf::from("/usr"),
        PathBuf::from("/lib"),
        PathBuf::from("/lib64"),
    ];
    m.insert(
        "python3.11".to_string(),
        RuntimeConfig {
            kind: RuntimeKind::Python,
            interpreter: Some("/usr/bin/python3".into()),
            host_paths: usr.clone(),
        },
    );
    m.insert(
        "nodejs20.x".to_string(),
        RuntimeConfig {
            kind: RuntimeKind::Node,
            interpreter: Some("/usr/bin/node".into()),
            host_paths: usr.clone(),
        },
    );
    for id in ["provided.al2023", "provided.al2", "provided"] {
        m.insert(
            id.to_string(),
            RuntimeConfig {
                kind: RuntimeKind::Provided,
                interpreter: None,
                host_paths: usr.clone(),
            },
        );
    }
    m
}

impl Catalog {
    /// Builds the catalog and writes our bootstraps under `data_dir/runtimes`.
    pub fn install(
        data_dir: &Path,
        configs: &BTreeMap<String, RuntimeConfig>,
    ) -> io::Result<Catalog> {
        let root = data_dir.join("runtimes");
        let python_dir = root.join("python");
        let node_dir = root.join("node");
        write_if_changed(&python_dir.join("bootstrap.py"), PYTHON_BOOTSTRAP)?;
        let changed = write_if_changed(&python_dir.join("_nimbus_bootstrap.py"), PYTHON_RUNTIME)?
            | write_if_changed(&python_dir.join("_nimbus_zygote.py"), PYTHON_ZYGOTE)?;
        write_if_changed(&node_dir.join("bootstrap.js"), NODE_BOOTSTRAP)?;
        let mut runtimes = BTreeMap::new();
        let mut compiled = std::collections::BTreeSet::new();
        for (id, cfg) in configs {
            // Python recompiles a module without a cached .pyc on every start (~4 ms): compile
            // ours once per interpreter, here, since environments see it read-only.
            if cfg.kind == RuntimeKind::Python
                && let Some(interp) = &cfg.interpreter
                && (changed || !python_dir.join("__pycache__").is_dir())
                && compiled.insert(interp.clone())
            {
                let status = std::process::Command::new(interp)
                    .args(["-m", "compileall", "-q"])
                    .arg(&python_dir)
                    .env_clear()
                    .status();
                if !status.is_ok_and(|s| s.success()) {
                    tracing::warn!(
                        "could not precompile the Python bootstrap with {}",
                        interp.display()
                    );
                }
            }
            let interp = || {
                cfg.interpreter
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("runtime {id}: an interpreter is required"),
                        )
                    })
            };
            let (argv, runtime_dir) = match cfg.kind {
                RuntimeKind::Python => (
                    vec![
                        interp()?,
                        "-S".into(),
                        "-B".into(),
                        "/var/runtime/bootstrap.py".into(),
                    ],
                    Some(python_dir.clone()),
                ),
                RuntimeKind::Node => (
                    vec![interp()?, "/var/runtime/bootstrap.js".into()],
                    Some(node_dir.clone()),
                ),
                RuntimeKind::Provided => (vec!["/var/task/bootstrap".into()], None),
            };
            runtimes.insert(
                id.clone(),
                Runtime {
                    id: id.clone(),
                    kind: cfg.kind,
                    argv,
                    runtime_dir,
                    host_paths: cfg.host_paths.clone(),
                },
            );
        }
        Ok(Catalog { runtimes })
    }

    pub fn get(&self, id: &str) -> Option<&Runtime> {
        self.runtimes.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.runtimes.keys().map(String::as_str)
    }
}

/// Writes a file unless it already holds `content`; returns whether it wrote.
fn write_if_changed(path: &Path, content: &str) -> io::Result<bool> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(content) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(tmp, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_catalog_offers_lambda_ids_on_host_interpreters() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::install(dir.path(), &default_runtime_configs()).unwrap();
        let py = cat.get("python3.11").unwrap();
        assert_eq!(py.argv[0], "/usr/bin/python3");
        assert_eq!(py.execution_env().as_deref(), Some("AWS_Lambda_python3.11"));
        assert!(dir.path().join("runtimes/python/bootstrap.py").is_file());
        let provided = cat.get("provided.al2023").unwrap();
        assert_eq!(provided.argv, vec!["/var/task/bootstrap".to_string()]);
        assert!(provided.execution_env().is_none());
        assert!(cat.get("python2.7").is_none());
    }
}
