//! Server configuration: command-line flags, then `NIMBUS_*` environment variables, then a
//! TOML file (`--config`), then the documented defaults below. Access keys and the account
//! each belongs to are settable in all three places.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::Credentials;
use crate::runtimes::{RuntimeConfig, default_runtime_configs};

/// Loopback by default: exposing the API is a decision, not an accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9700";
pub const DEFAULT_REGION: &str = "us-east-1";
/// How long an idle environment is kept warm. Lambda keeps them for minutes, unspecified;
/// five minutes keeps bursts warm while an idle function soon costs nothing.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(300);

/// The `[serve]` options as a file may give them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub sandbox: Option<String>,
    pub keep_alive_secs: Option<u64>,
    pub concurrency_limit: Option<u32>,
    pub cpu_limit: Option<String>,
    pub python_zygote: Option<bool>,
    pub idle_poll: Option<String>,
    #[serde(default)]
    pub access_keys: Vec<FileKey>,
    #[serde(default)]
    pub runtimes: BTreeMap<String, RuntimeConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account_id: Option<String>,
}

/// Which sandbox backend runs environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxKind {
    Process,
    Jail,
}

/// How the jail limits a function's CPU. Both give a function CPU in proportion to its
/// memory (one CPU at 1,769 MB, as Lambda); they differ in what happens when the machine has
/// CPU to spare. See docs/decisions/0007-cpu-share-by-default.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuLimit {
    /// A proportional weight: under contention every function gets its share, and a function
    /// may use CPU nobody else wants. The default.
    Share,
    /// The weight plus a hard CFS quota of exactly the share, applied after init: Lambda's
    /// ceiling, for reproducing how a CPU-bound function behaves there.
    Quota,
}

/// Whether idle CPUs poll while invocations run (decision 0011).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePollMode {
    /// Where idle CPUs halt without polling first (a KVM guest with guest halt polling off),
    /// and the server may make the request (root). The default.
    Auto,
    On,
    Off,
}

impl IdlePollMode {
    /// `auto`, or a switch (`on`/`off`, `true`/`false`).
    pub fn parse(value: &str) -> Option<IdlePollMode> {
        match value {
            "auto" => Some(IdlePollMode::Auto),
            other => switch(other).map(|on| {
                if on {
                    IdlePollMode::On
                } else {
                    IdlePollMode::Off
                }
            }),
        }
    }
}

/// An on/off option's value.
fn switch(value: &str) -> Option<bool> {
    match value {
        "on" | "true" => Some(true),
        "off" | "false" => Some(false),
        _ => None,
    }
}

/// The resolved configuration of `nimbus serve`.
#[derive(Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub region: String,
    /// Account of keys that name none; generated once per data directory if not configured.
    pub account_id: Option<String>,
    pub access_keys: Vec<Credentials>,
    pub sandbox: SandboxKind,
    pub keep_alive: Duration,
    pub concurrency_limit: u32,
    pub cpu_limit: CpuLimit,
    /// Jail: Python runtimes forked from a zygote (decision 0010). On by default.
    pub python_zygote: bool,
    pub idle_poll: IdlePollMode,
    pub runtimes: BTreeMap<String, RuntimeConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error(
        "invalid access key '{0}': expected ACCESS_KEY_ID:SECRET_ACCESS_KEY[:ACCOUNT_ID] (account: 12 digits)"
    )]
    BadKey(String),
    #[error("invalid account id '{0}': expected 12 digits")]
    BadAccount(String),
    #[error("unknown sandbox '{0}': expected 'jail' or 'process'")]
    BadSandbox(String),
    #[error("unknown CPU limit '{0}': expected 'share' or 'quota'")]
    BadCpuLimit(String),
    #[error("invalid python-zygote value '{0}': expected 'on' or 'off'")]
    BadSwitch(String),
    #[error("invalid idle-poll value '{0}': expected 'auto', 'on' or 'off'")]
    BadIdlePoll(String),
}

/// What the command line (or its environment variables) said.
#[derive(Debug, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    /// `ACCESS:SECRET[:ACCOUNT]`, each entry possibly a comma-separated list.
    pub access_keys: Vec<String>,
    pub sandbox: Option<String>,
    pub keep_alive_secs: Option<u64>,
    pub concurrency_limit: Option<u32>,
    pub cpu_limit: Option<String>,
    /// `on`/`off` (also `true`/`false`).
    pub python_zygote: Option<String>,
    /// `auto`, `on` or `off`.
    pub idle_poll: Option<String>,
}

pub fn validate_account(a: &str) -> Result<(), ConfigError> {
    if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ConfigError::BadAccount(a.to_string()))
    }
}

/// The default data directory: `$XDG_DATA_HOME/nimbus`, else `~/.local/share/nimbus`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("nimbus");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/nimbus"),
        None => PathBuf::from(".nimbus"),
    }
}

impl ServerConfig {
    pub fn resolve(o: Overrides) -> Result<ServerConfig, ConfigError> {
        let file = match &o.config_file {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let account_id = o.account_id.or(file.account_id);
        if let Some(a) = &account_id {
            validate_account(a)?;
        }
        let mut access_keys = Vec::new();
        for spec in o.access_keys.iter().flat_map(|s| s.split(',')) {
            let spec = spec.trim();
            if spec.is_empty() {
                continue;
            }
            access_keys.push(parse_key(spec, account_id.as_deref())?);
        }
        if access_keys.is_empty() {
            for k in file.access_keys {
                let account = k
                    .account_id
                    .or_else(|| account_id.clone())
                    .unwrap_or_default();
                if !account.is_empty() {
                    validate_account(&account)?;
                }
                access_keys.push(Credentials {
                    access_key_id: k.access_key_id,
                    secret_access_key: k.secret_access_key,
                    account_id: account,
                });
            }
        }
        let sandbox = match o.sandbox.or(file.sandbox).as_deref() {
            None => default_sandbox(),
            Some("process") => SandboxKind::Process,
            Some("jail") => SandboxKind::Jail,
            Some(other) => return Err(ConfigError::BadSandbox(other.to_string())),
        };
        let cpu_limit = match o.cpu_limit.or(file.cpu_limit).as_deref() {
            None | Some("share") => CpuLimit::Share,
            Some("quota") => CpuLimit::Quota,
            Some(other) => return Err(ConfigError::BadCpuLimit(other.to_string())),
        };
        let python_zygote = match o.python_zygote.as_deref() {
            None => file.python_zygote.unwrap_or(true),
            Some(v) => switch(v).ok_or_else(|| ConfigError::BadSwitch(v.to_string()))?,
        };
        let idle_poll = match o.idle_poll.or(file.idle_poll) {
            None => IdlePollMode::Auto,
            Some(v) => IdlePollMode::parse(&v).ok_or(ConfigError::BadIdlePoll(v))?,
        };
        let mut runtimes = default_runtime_configs();
        runtimes.extend(file.runtimes);
        Ok(ServerConfig {
            listen: o.listen.or(file.listen).unwrap_or_else(|| {
                DEFAULT_LISTEN
                    .parse()
                    .unwrap_or_else(|_| ([127, 0, 0, 1], 9700).into())
            }),
            data_dir: o
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(default_data_dir),
            region: o
                .region
                .or(file.region)
                .unwrap_or_else(|| DEFAULT_REGION.to_string()),
            account_id,
            access_keys,
            sandbox,
            keep_alive: o
                .keep_alive_secs
                .or(file.keep_alive_secs)
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_KEEP_ALIVE),
            concurrency_limit: o
                .concurrency_limit
                .or(file.concurrency_limit)
                .unwrap_or(crate::model::limits::ACCOUNT_CONCURRENCY),
            cpu_limit,
            python_zygote,
            idle_poll,
            runtimes,
        })
    }
}

/// The jail: isolation is not optional. The process backend is an explicit choice.
fn default_sandbox() -> SandboxKind {
    SandboxKind::Jail
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_key(spec: &str, default_account: Option<&str>) -> Result<Credentials, ConfigError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (ak, sk, account) = match parts.as_slice() {
        [ak, sk] => (*ak, *sk, default_account.unwrap_or("")),
        [ak, sk, acct] => (*ak, *sk, *acct),
        _ => return Err(ConfigError::BadKey(spec.to_string())),
    };
    if ak.is_empty() || sk.is_empty() {
        return Err(ConfigError::BadKey(spec.to_string()));
    }
    if !account.is_empty() {
        validate_account(account).map_err(|_| ConfigError::BadKey(spec.to_string()))?;
    }
    Ok(Credentials {
        access_key_id: ak.to_string(),
        secret_access_key: sk.to_string(),
        account_id: account.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_flags_carry_their_account() {
        let c = ServerConfig::resolve(Overrides {
            access_keys: vec!["testing:testing:123456789012,other:secret".into()],
            account_id: Some("999999999999".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.access_keys[0].account_id, "123456789012");
        assert_eq!(c.access_keys[1].account_id, "999999999999");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn malformed_keys_and_accounts_are_refused() {
        for bad in ["nocolon", "a:b:123", ":b"] {
            let r = ServerConfig::resolve(Overrides {
                access_keys: vec![bad.into()],
                ..Default::default()
            });
            assert!(r.is_err(), "{bad}");
        }
    }

    #[test]
    fn file_values_apply_when_flags_are_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nimbus.toml");
        std::fs::write(
            &path,
            r#"
listen = "127.0.0.1:1234"
region = "eu-west-1"
keep_alive_secs = 7
cpu_limit = "quota"
python_zygote = false
idle_poll = "off"
[[access_keys]]
access_key_id = "k"
secret_access_key = "s"
account_id = "123456789012"
[runtimes."python3.12"]
kind = "python"
interpreter = "/usr/local/bin/python3.12"
"#,
        )
        .unwrap();
        let c = ServerConfig::resolve(Overrides {
            config_file: Some(path),
            region: Some("us-west-2".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen.port(), 1234);
        assert_eq!(c.region, "us-west-2");
        assert_eq!(c.keep_alive, Duration::from_secs(7));
        assert_eq!(c.access_keys[0].access_key_id, "k");
        assert!(c.runtimes.contains_key("python3.12"));
        assert!(c.runtimes.contains_key("python3.11"));
        assert_eq!(c.cpu_limit, CpuLimit::Quota);
        assert!(!c.python_zygote);
        assert_eq!(c.idle_poll, IdlePollMode::Off);
    }

    #[test]
    fn cpu_limit_defaults_to_share_and_refuses_unknown_values() {
        let c = ServerConfig::resolve(Overrides::default()).unwrap();
        assert_eq!(c.cpu_limit, CpuLimit::Share);
        let r = ServerConfig::resolve(Overrides {
            cpu_limit: Some("hard".into()),
            ..Default::default()
        });
        assert!(matches!(r, Err(ConfigError::BadCpuLimit(v)) if v == "hard"));
    }

    #[test]
    fn python_zygote_is_on_unless_switched_off() {
        assert!(
            ServerConfig::resolve(Overrides::default())
                .unwrap()
                .python_zygote
        );
        let off = |v: &str| {
            ServerConfig::resolve(Overrides {
                python_zygote: Some(v.into()),
                ..Default::default()
            })
            .map(|c| c.python_zygote)
        };
        assert!(!off("off").unwrap() && !off("false").unwrap());
        assert!(off("on").unwrap());
        assert!(matches!(off("maybe"), Err(ConfigError::BadSwitch(v)) if v == "maybe"));
    }

    #[test]
    fn idle_poll_is_automatic_unless_set() {
        let mode = |v: Option<&str>| {
            ServerConfig::resolve(Overrides {
                idle_poll: v.map(String::from),
                ..Default::default()
            })
            .map(|c| c.idle_poll)
        };
        assert_eq!(mode(None).unwrap(), IdlePollMode::Auto);
        assert_eq!(mode(Some("auto")).unwrap(), IdlePollMode::Auto);
        assert_eq!(mode(Some("on")).unwrap(), IdlePollMode::On);
        assert_eq!(mode(Some("off")).unwrap(), IdlePollMode::Off);
        assert!(matches!(mode(Some("always")), Err(ConfigError::BadIdlePoll(v)) if v == "always"));
    }
}
