//! Validated domain types: function names and references, qualifiers, ARNs, the stored
//! function configuration, and Lambda's limits.
//!
//! Everything here is plain data. It knows nothing of HTTP, SQLite or processes; the wire
//! shapes (JSON member names) are produced in `api`, from these types.

pub mod time;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Lambda's documented quotas (classic functions; lambda-wire.md §4.6).
pub mod limits {
    pub const MEMORY_MIN_MB: u32 = 128;
    pub const MEMORY_MAX_MB: u32 = 10_240;
    pub const TIMEOUT_MIN_S: u32 = 1;
    pub const TIMEOUT_MAX_S: u32 = 900;
    pub const DEFAULT_TIMEOUT_S: u32 = 3;
    pub const DEFAULT_MEMORY_MB: u32 = 128;
    pub const EPHEMERAL_MIN_MB: u32 = 512;
    pub const EPHEMERAL_MAX_MB: u32 = 10_240;
    /// Synchronous invoke request and response payloads (6 MB).
    pub const SYNC_PAYLOAD_MAX: usize = 6_291_456;
    /// What a runtime may post as a response: RIE allows 100 bytes of slack.
    pub const RUNTIME_RESPONSE_MAX: usize = 6_291_556;
    /// Asynchronous (`Event`) payloads: we pick the current 1 MB limit.
    pub const ASYNC_PAYLOAD_MAX: usize = 1_048_576;
    /// The deprecated InvokeAsync's payloads (256 KB).
    pub const INVOKE_ASYNC_PAYLOAD_MAX: usize = 262_144;
    /// The live service's cap on a CreateFunction/UpdateFunctionCode request (50 MiB zip, base64).
    pub const CREATE_REQUEST_MAX: usize = 69_905_067;
    /// Deployment package: 50 MB zipped, 250 MB unzipped.
    pub const ZIP_MAX: u64 = 52_428_800;
    pub const UNZIPPED_MAX: u64 = 262_144_000;
    /// Environment variables: 4 KB in total.
    pub const ENV_VARS_MAX_BYTES: usize = 4096;
    pub const DESCRIPTION_MAX: usize = 256;
    pub const HANDLER_MAX: usize = 128;
    pub const NAME_MAX: usize = 64;
    /// Lambda's on-demand init limit.
    pub const INIT_TIMEOUT_S: u64 = 10;
    /// Default account concurrency.
    pub const ACCOUNT_CONCURRENCY: u32 = 1000;
    /// Bytes of log returned by `LogType: Tail`.
    pub const LOG_TAIL_BYTES: usize = 4096;
}

/// A client error in a request's values; the API layer turns it into
/// `InvalidParameterValueException`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidParameter(pub String);

fn invalid(msg: impl Into<String>) -> InvalidParameter {
    InvalidParameter(msg.into())
}

/// Checks a bare function name: `[a-zA-Z0-9-_]{1,64}`.
pub fn validate_function_name(name: &str) -> Result<(), InvalidParameter> {
    if name.is_empty()
        || name.len() > limits::NAME_MAX
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(format!(
            "1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+ and have length between 1 and 64"
        )));
    }
    Ok(())
}

/// What a `{FunctionName}` path parameter names: a function and maybe a qualifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub qualifier: Option<String>,
    /// Account id given in an ARN form, checked against the caller's.
    pub account: Option<String>,
    /// Region given in a full ARN.
    pub region: Option<String>,
}

impl FunctionRef {
    /// Parses a name, `name:qualifier`, a partial ARN (`123456789012:function:name[:q]`) or a
    /// full ARN (`arn:aws:lambda:region:account:function:name[:q]`).
    pub fn parse(input: &str) -> Result<Self, InvalidParameter> {
        let parts: Vec<&str> = input.split(':').collect();
        let (name, qualifier, account, region) = match parts.as_slice() {
            [name] => (*name, None, None, None),
            [name, q] => (*name, Some(*q), None, None),
            [acct, "function", name] => (*name, None, Some(*acct), None),
            [acct, "function", name, q] => (*name, Some(*q), Some(*acct), None),
            [arn, _partition, "lambda", region, acct, "function", name] if *arn == "arn" => {
                (*name, None, Some(*acct), Some(*region))
            }
            [arn, _partition, "lambda", region, acct, "function", name, q] if *arn == "arn" => {
                (*name, Some(*q), Some(*acct), Some(*region))
            }
            _ => {
                return Err(invalid(format!(
                    "1 validation error detected: Value '{input}' at 'functionName' failed to satisfy constraint: \
                     Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{{2}}(-gov)?-[a-z]+-\\d{{1}}:)?(\\d{{12}}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
                )));
            }
        };
        validate_function_name(name)?;
        if let Some(q) = qualifier {
            validate_qualifier(q)?;
        }
        Ok(FunctionRef {
            name: name.to_string(),
            qualifier: qualifier.map(str::to_string),
            account: account.map(str::to_string),
            region: region.map(str::to_string),
        })
    }

    /// Merges the `?Qualifier=` query parameter with a qualifier from the name; they must agree.
    pub fn with_query_qualifier(mut self, q: Option<String>) -> Result<Self, InvalidParameter> {
        match (&self.qualifier, q) {
            (_, None) => Ok(self),
            (None, Some(q)) => {
                validate_qualifier(&q)?;
                self.qualifier = Some(q);
                Ok(self)
            }
            (Some(a), Some(b)) if *a == b => Ok(self),
            (Some(_), Some(_)) => Err(invalid(
                "The derived qualifier from the function name does not match the specified qualifier.",
            )),
        }
    }
}

/// `$LATEST`, a version number or an alias name.
pub fn validate_qualifier(q: &str) -> Result<(), InvalidParameter> {
    let ok = !q.is_empty()
        && q.len() <= 128
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'$')
        && (!q.contains('$') || q == LATEST);
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{q}' at 'qualifier' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)"
        )))
    }
}

pub const LATEST: &str = "$LATEST";

/// The ARN of a function, optionally qualified.
pub fn function_arn(region: &str, account: &str, name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{region}:{account}:function:{name}:{q}"),
        None => format!("arn:aws:lambda:{region}:{account}:function:{name}"),
    }
}

/// One function version's configuration as Nimbus stores it. `$LATEST` is the mutable one;
/// published versions (later) are immutable copies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionConfig {
    pub name: String,
    pub account: String,
    pub version: String,
    pub runtime: String,
    pub handler: String,
    pub role: String,
    pub description: String,
    pub timeout: u32,
    pub memory_size: u32,
    pub environment: BTreeMap<String, String>,
    /// Hex SHA-256 of the zip: names the blob and the unpacked directory.
    pub code_sha256_hex: String,
    /// Base64 SHA-256 of the zip, as `CodeSha256` shows it.
    pub code_sha256: String,
    pub code_size: u64,
    pub last_modified_ms: u64,
    pub revision_id: String,
    pub ephemeral_storage: u32,
    pub architectures: Vec<String>,
    pub tracing_mode: String,
    pub dead_letter_target: Option<String>,
    pub layers: Vec<String>,
    pub kms_key_arn: Option<String>,
    /// Outbound network access from the sandbox (on by default, as on Lambda). Nimbus has no
    /// VPCs: a function attached to subnets (`VpcConfig`) gets none, like a Lambda function
    /// in a private subnet without a NAT gateway.
    #[serde(default = "default_true")]
    pub network: bool,
    #[serde(default)]
    pub vpc_subnet_ids: Vec<String>,
    #[serde(default)]
    pub vpc_security_group_ids: Vec<String>,
}

fn default_true() -> bool {
    true
}

impl FunctionConfig {
    /// Whether two configurations would run the same way: everything but the identity of
    /// the snapshot (version, revision, time). PublishVersion uses it to return the existing
    /// version when nothing changed.
    pub fn same_content(&self, other: &FunctionConfig) -> bool {
        let strip = |c: &FunctionConfig| FunctionConfig {
            version: String::new(),
            revision_id: String::new(),
            last_modified_ms: 0,
            description: String::new(),
            ..c.clone()
        };
        strip(self) == strip(other)
    }
}

/// An alias: a name for a version, optionally splitting traffic with a second one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AliasConfig {
    pub name: String,
    pub function_version: String,
    pub description: String,
    /// At most one extra version and the share of invocations it gets (0.0–1.0).
    pub additional_weights: BTreeMap<String, f64>,
    pub revision_id: String,
}

impl AliasConfig {
    /// Picks the version an invocation runs, given a uniform random number in [0, 1).
    pub fn route(&self, r: f64) -> &str {
        let mut acc = 0.0;
        for (v, w) in &self.additional_weights {
            acc += w;
            if r < acc {
                return v;
            }
        }
        &self.function_version
    }
}

/// Checks an alias name: `(?!^[0-9]+$)[a-zA-Z0-9-_]+`, 1–128 characters.
pub fn validate_alias_name(name: &str) -> Result<(), InvalidParameter> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)"
        )))
    }
}

/// A qualifier is a published version number.
pub fn is_version_number(q: &str) -> bool {
    !q.is_empty() && q.len() <= 10 && q.bytes().all(|b| b.is_ascii_digit())
}

/// Variables a user may not set (lambda-wire.md §4.1, "R").
pub const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

pub fn validate_memory(mb: i64) -> Result<u32, InvalidParameter> {
    if (limits::MEMORY_MIN_MB as i64..=limits::MEMORY_MAX_MB as i64).contains(&mb) {
        Ok(mb as u32)
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{mb}' at 'memorySize' failed to satisfy constraint: \
             Member must have value less than or equal to {} and greater than or equal to {}",
            limits::MEMORY_MAX_MB,
            limits::MEMORY_MIN_MB
        )))
    }
}

pub fn validate_timeout(s: i64) -> Result<u32, InvalidParameter> {
    if (limits::TIMEOUT_MIN_S as i64..=limits::TIMEOUT_MAX_S as i64).contains(&s) {
        Ok(s as u32)
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{s}' at 'timeout' failed to satisfy constraint: \
             Member must have value less than or equal to {} and greater than or equal to {}",
            limits::TIMEOUT_MAX_S,
            limits::TIMEOUT_MIN_S
        )))
    }
}

pub fn validate_ephemeral(mb: i64) -> Result<u32, InvalidParameter> {
    if (limits::EPHEMERAL_MIN_MB as i64..=limits::EPHEMERAL_MAX_MB as i64).contains(&mb) {
        Ok(mb as u32)
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{mb}' at 'ephemeralStorage.size' failed to satisfy constraint: \
             Member must have value less than or equal to {} and greater than or equal to {}",
            limits::EPHEMERAL_MAX_MB,
            limits::EPHEMERAL_MIN_MB
        )))
    }
}

pub fn validate_handler(h: &str) -> Result<(), InvalidParameter> {
    if h.is_empty() || h.len() > limits::HANDLER_MAX || h.chars().any(char::is_whitespace) {
        return Err(invalid(format!(
            "1 validation error detected: Value '{h}' at 'handler' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: [^\\s]+ and have length between 1 and 128"
        )));
    }
    Ok(())
}

pub fn validate_description(d: &str) -> Result<(), InvalidParameter> {
    if d.len() > limits::DESCRIPTION_MAX {
        return Err(invalid(
            "1 validation error detected: Value at 'description' failed to satisfy constraint: \
             Member must have length less than or equal to 256",
        ));
    }
    Ok(())
}

pub fn validate_role(role: &str) -> Result<(), InvalidParameter> {
    let ok = role.starts_with("arn:")
        && role.contains(":iam::")
        && role.contains(":role/")
        && role.len() <= 2048;
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{role}' at 'role' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\\d{{12}}:role/?[a-zA-Z_0-9+=,.@\\-_/]+"
        )))
    }
}

/// Keys `[a-zA-Z]([a-zA-Z0-9_])+`, no reserved key, at most 4 KB in total.
pub fn validate_environment(vars: &BTreeMap<String, String>) -> Result<(), InvalidParameter> {
    let mut reserved = Vec::new();
    let mut total = 0;
    for (k, v) in vars {
        let mut chars = k.chars();
        let ok = k.len() >= 2
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(invalid(format!(
                "1 validation error detected: Value '{k}' at 'environment.variables' failed to satisfy constraint: \
                 Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]"
            )));
        }
        if RESERVED_ENV.contains(&k.as_str()) {
            reserved.push(k.as_str());
        }
        total += k.len() + v.len();
    }
    if !reserved.is_empty() {
        return Err(invalid(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have \
             provided contains reserved keys that are currently not supported for modification. Reserved keys used in \
             this request: {}",
            reserved.join(", ")
        )));
    }
    if total > limits::ENV_VARS_MAX_BYTES {
        return Err(invalid(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have \
             provided exceeded the 4KB limit. String measured: {total}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_function_reference_form() {
        let r = FunctionRef::parse("my-fn").unwrap();
        assert_eq!((r.name.as_str(), r.qualifier), ("my-fn", None));
        let r = FunctionRef::parse("my-fn:$LATEST").unwrap();
        assert_eq!(r.qualifier.as_deref(), Some("$LATEST"));
        let r = FunctionRef::parse("123456789012:function:f:7").unwrap();
        assert_eq!(
            (r.account.as_deref(), r.qualifier.as_deref()),
            (Some("123456789012"), Some("7"))
        );
        let r = FunctionRef::parse("arn:aws:lambda:us-east-1:123456789012:function:f").unwrap();
        assert_eq!(
            (r.name.as_str(), r.region.as_deref()),
            ("f", Some("us-east-1"))
        );
    }

    #[test]
    fn rejects_bad_names_and_qualifiers() {
        assert!(FunctionRef::parse("bad name").is_err());
        assert!(FunctionRef::parse("a:b:c:d:e").is_err());
        assert!(FunctionRef::parse(&"x".repeat(65)).is_err());
        assert!(FunctionRef::parse("f:$NOPE").is_err());
    }

    #[test]
    fn conflicting_qualifiers_are_rejected() {
        let r = FunctionRef::parse("f:1").unwrap();
        assert!(r.clone().with_query_qualifier(Some("2".into())).is_err());
        assert!(r.with_query_qualifier(Some("1".into())).is_ok());
    }

    #[test]
    fn environment_rules_follow_lambda() {
        let mut vars = BTreeMap::new();
        vars.insert("GOOD_KEY".to_string(), "v".to_string());
        assert!(validate_environment(&vars).is_ok());
        vars.insert("AWS_REGION".to_string(), "x".to_string());
        let err = validate_environment(&vars).unwrap_err();
        assert!(err.0.contains("AWS_REGION"));
        let mut vars = BTreeMap::new();
        vars.insert("1BAD".to_string(), "v".to_string());
        assert!(validate_environment(&vars).is_err());
        let mut vars = BTreeMap::new();
        vars.insert("BIG".to_string(), "v".repeat(5000));
        assert!(validate_environment(&vars).is_err());
    }

    #[test]
    fn alias_routing_follows_the_weights() {
        let mut w = BTreeMap::new();
        w.insert("2".to_string(), 0.25);
        let a = AliasConfig {
            name: "live".into(),
            function_version: "1".into(),
            description: String::new(),
            additional_weights: w,
            revision_id: "r".into(),
        };
        assert_eq!(a.route(0.0), "2");
        assert_eq!(a.route(0.2499), "2");
        assert_eq!(a.route(0.25), "1");
        assert_eq!(a.route(0.99), "1");
    }

    #[test]
    fn alias_names_cannot_be_numbers() {
        assert!(validate_alias_name("live").is_ok());
        assert!(validate_alias_name("123").is_err());
        assert!(validate_alias_name("$LATEST").is_err());
    }

    #[test]
    fn memory_and_timeout_bounds() {
        assert!(validate_memory(127).is_err());
        assert_eq!(validate_memory(10_240).unwrap(), 10_240);
        assert!(validate_timeout(0).is_err());
        assert!(validate_timeout(901).is_err());
        assert_eq!(validate_timeout(900).unwrap(), 900);
    }
}
