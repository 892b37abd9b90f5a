//! Function CRUD: CreateFunction, GetFunction, GetFunctionConfiguration, ListFunctions,
//! UpdateFunctionCode, UpdateFunctionConfiguration, DeleteFunction, and the signed download
//! of a function's code that GetFunction links to.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use hyper::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use super::wire::{
    CreateFunctionRequest, EnvironmentWire, UpdateFunctionCodeRequest,
    UpdateFunctionConfigurationRequest, function_configuration,
};
use super::{ApiError, ApiRequest, AppState, Ctx, Resp, empty, json, parse_body};
use crate::model::time::now_ms;
use crate::model::{self, FunctionConfig, FunctionRef, LATEST, limits};
use crate::store::code::CodeInfo;

/// A `{FunctionName}` (+ `?Qualifier=`) resolved for the caller's account.
pub struct Resolved {
    pub fref: FunctionRef,
    /// The configuration the qualifier names (an alias: the version it points to).
    pub config: Arc<FunctionConfig>,
    pub alias: Option<Arc<crate::model::AliasConfig>>,
}

fn not_found(state: &AppState, ctx: &Ctx, r: &FunctionRef) -> ApiError {
    ApiError::ResourceNotFound(format!(
        "Function not found: {}",
        model::function_arn(&state.region, &ctx.account, &r.name, r.qualifier.as_deref())
    ))
}

/// Parses a `{FunctionName}` path parameter and checks it names this account and region.
pub fn parse_ref(
    state: &AppState,
    ctx: &Ctx,
    raw: &str,
    query_qualifier: Option<String>,
) -> Result<FunctionRef, ApiError> {
    let r = FunctionRef::parse(raw)?.with_query_qualifier(query_qualifier)?;
    if r.account.as_deref().is_some_and(|a| a != ctx.account) {
        return Err(not_found(state, ctx, &r));
    }
    if let Some(region) = &r.region
        && *region != state.region
    {
        return Err(ApiError::ResourceNotFound(format!(
            "Functions from '{region}' are not reachable in this region ('{}')",
            state.region
        )));
    }
    Ok(r)
}

/// Resolves a `{FunctionName}` path parameter (name, ARN, `:qualifier`) and `?Qualifier=`.
pub fn resolve_full(
    state: &AppState,
    ctx: &Ctx,
    raw: &str,
    query_qualifier: Option<String>,
) -> Result<Resolved, ApiError> {
    let fref = parse_ref(state, ctx, raw, query_qualifier)?;
    let found = state
        .store
        .with_entry(&ctx.account, &fref.name, |e| {
            e.qualified(fref.qualifier.as_deref())
        })
        .flatten();
    match found {
        Some((config, alias)) => Ok(Resolved {
            fref,
            config,
            alias,
        }),
        None => Err(not_found(state, ctx, &fref)),
    }
}

/// Resolves to the function configuration a qualifier names.
pub fn resolve(
    state: &AppState,
    ctx: &Ctx,
    raw: &str,
    query_qualifier: Option<String>,
) -> Result<(FunctionRef, Arc<FunctionConfig>), ApiError> {
    let r = resolve_full(state, ctx, raw, query_qualifier)?;
    Ok((r.fref, r.config))
}

/// Resolves for an invocation: an alias routes to one of its versions by weight.
pub fn resolve_for_invoke(
    state: &AppState,
    ctx: &Ctx,
    raw: &str,
    query_qualifier: Option<String>,
) -> Result<(FunctionRef, Arc<FunctionConfig>), ApiError> {
    let r = resolve_full(state, ctx, raw, query_qualifier)?;
    let Some(alias) = &r.alias else {
        return Ok((r.fref, r.config));
    };
    if alias.additional_weights.is_empty() {
        return Ok((r.fref, r.config));
    }
    let chosen = alias.route(fastrand::f64());
    let config = state
        .store
        .with_entry(&ctx.account, &r.fref.name, |e| e.version(chosen))
        .flatten()
        .ok_or_else(|| not_found(state, ctx, &r.fref))?;
    Ok((r.fref, config))
}

fn decode_zip(b64: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| {
            ApiError::InvalidParameterValue(
                "Could not unzip uploaded file. Please check your file, then try to upload again."
                    .into(),
            )
        })
}

async fn store_code(state: &Arc<AppState>, zip: Vec<u8>) -> Result<CodeInfo, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.code.put_zip(&zip))
        .await
        .map_err(|e| ApiError::Internal(format!("unpack task failed: {e}")))?
        .map_err(ApiError::from)
}

fn zip_from_code(code: &super::wire::FunctionCode) -> Result<Vec<u8>, ApiError> {
    if code.image_uri.is_some() {
        return Err(ApiError::InvalidParameterValue(
            "Container-image functions (Code.ImageUri) are not supported by this Nimbus server yet; upload a zip (Code.ZipFile)."
                .into(),
        ));
    }
    if code.s3_bucket.is_some() || code.s3_key.is_some() {
        return Err(ApiError::InvalidParameterValue(
            "Code from S3 (S3Bucket/S3Key) is not supported by this Nimbus server yet; upload the zip directly (Code.ZipFile)."
                .into(),
        ));
    }
    match &code.zip_file {
        Some(z) => decode_zip(z),
        None => Err(ApiError::InvalidParameterValue(
            "Please provide a source for function code.".into(),
        )),
    }
}

fn check_runtime(state: &AppState, runtime: &str) -> Result<(), ApiError> {
    if state.invoker.catalog().get(runtime).is_some() {
        return Ok(());
    }
    let ids: Vec<&str> = state.invoker.catalog().ids().collect();
    Err(ApiError::InvalidParameterValue(format!(
        "Value {runtime} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [{}] \
         (the runtimes this Nimbus server offers; more can be added in its configuration)",
        ids.join(", ")
    )))
}

fn check_architectures(a: &Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    match a.as_deref() {
        None | Some([]) => Ok(vec!["x86_64".into()]),
        Some([one]) if one == "x86_64" => Ok(vec![one.clone()]),
        Some([one]) if one == "arm64" => Err(ApiError::InvalidParameterValue(
            "The architecture arm64 is not available on this Nimbus server (x86_64 host).".into(),
        )),
        Some(_) => Err(ApiError::InvalidParameterValue(
            "1 validation error detected: Value at 'architectures' failed to satisfy constraint: \
             Member must have length less than or equal to 1 and satisfy enum value set: [x86_64, arm64]"
                .into(),
        )),
    }
}

fn environment(e: &Option<EnvironmentWire>) -> Result<BTreeMap<String, String>, ApiError> {
    let vars = e
        .as_ref()
        .and_then(|e| e.variables.clone())
        .unwrap_or_default();
    model::validate_environment(&vars)?;
    Ok(vars)
}

fn tracing_mode(t: &Option<super::wire::TracingConfigWire>) -> Result<String, ApiError> {
    match t.as_ref().and_then(|t| t.mode.as_deref()) {
        None | Some("PassThrough") => Ok("PassThrough".into()),
        Some("Active") => Ok("Active".into()),
        Some(m) => Err(ApiError::InvalidParameterValue(format!(
            "1 validation error detected: Value '{m}' at 'tracingConfig.mode' failed to satisfy constraint: \
             Member must satisfy enum value set: [Active, PassThrough]"
        ))),
    }
}

/// Attaching a function to subnets takes its outbound network away (see `FunctionConfig`);
/// empty lists detach it, as on Lambda.
fn apply_vpc(cfg: &mut FunctionConfig, v: super::wire::VpcConfigWire) {
    cfg.network = v.subnet_ids.is_empty();
    cfg.vpc_subnet_ids = v.subnet_ids;
    cfg.vpc_security_group_ids = v.security_group_ids;
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// CreateFunction — `POST /2015-03-31/functions` → 201.
pub async fn create(state: &Arc<AppState>, ctx: &Ctx, req: &ApiRequest) -> Result<Resp, ApiError> {
    let body: CreateFunctionRequest = parse_body(&req.body)?;
    let name_raw = body
        .function_name
        .as_deref()
        .ok_or_else(|| ApiError::InvalidParameterValue("FunctionName is required.".into()))?;
    let fref = FunctionRef::parse(name_raw)?;
    if fref.qualifier.is_some() {
        return Err(ApiError::InvalidParameterValue(
            "A function name given to CreateFunction cannot carry a qualifier.".into(),
        ));
    }
    if fref.account.as_deref().is_some_and(|a| a != ctx.account) {
        return Err(ApiError::InvalidParameterValue(
            "The function ARN names another account.".into(),
        ));
    }
    if body.package_type.as_deref().is_some_and(|p| p != "Zip") {
        return Err(ApiError::InvalidParameterValue(
            "PackageType Image is not supported by this Nimbus server yet; use Zip.".into(),
        ));
    }
    let runtime = body.runtime.clone().ok_or_else(|| {
        ApiError::InvalidParameterValue("Runtime is required for .zip file packages.".into())
    })?;
    check_runtime(state, &runtime)?;
    let handler = body.handler.clone().ok_or_else(|| {
        ApiError::InvalidParameterValue("Handler is required for .zip file packages.".into())
    })?;
    model::validate_handler(&handler)?;
    let role = body
        .role
        .clone()
        .ok_or_else(|| ApiError::InvalidParameterValue("Role is required.".into()))?;
    model::validate_role(&role)?;
    let description = body.description.clone().unwrap_or_default();
    model::validate_description(&description)?;
    let timeout =
        model::validate_timeout(body.timeout.unwrap_or(limits::DEFAULT_TIMEOUT_S as i64))?;
    let memory =
        model::validate_memory(body.memory_size.unwrap_or(limits::DEFAULT_MEMORY_MB as i64))?;
    let ephemeral = model::validate_ephemeral(
        body.ephemeral_storage
            .as_ref()
            .map(|e| e.size)
            .unwrap_or(limits::EPHEMERAL_MIN_MB as i64),
    )?;
    let env = environment(&body.environment)?;
    let architectures = check_architectures(&body.architectures)?;
    let tracing = tracing_mode(&body.tracing_config)?;
    if body.layers.as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(ApiError::InvalidParameterValue(
            "Layers are not supported by this Nimbus server yet.".into(),
        ));
    }
    if state.store.get(&ctx.account, &fref.name).is_some() {
        return Err(ApiError::ResourceConflict(format!(
            "Function already exist: {}",
            fref.name
        )));
    }
    let zip = zip_from_code(
        body.code
            .as_ref()
            .ok_or_else(|| ApiError::InvalidParameterValue("Code is required.".into()))?,
    )?;
    let code = store_code(state, zip).await?;
    let mut cfg = FunctionConfig {
        name: fref.name.clone(),
        account: ctx.account.clone(),
        version: LATEST.into(),
        runtime,
        handler,
        role,
        description,
        timeout,
        memory_size: memory,
        environment: env,
        code_sha256_hex: code.sha256_hex,
        code_sha256: code.sha256_b64,
        code_size: code.size,
        last_modified_ms: now_ms(),
        revision_id: new_revision(),
        ephemeral_storage: ephemeral,
        architectures,
        tracing_mode: tracing,
        dead_letter_target: body.dead_letter_config.and_then(|d| d.target_arn),
        layers: Vec::new(),
        kms_key_arn: body.kms_key_arn,
        network: true,
        vpc_subnet_ids: Vec::new(),
        vpc_security_group_ids: Vec::new(),
    };
    if let Some(v) = body.vpc_config {
        apply_vpc(&mut cfg, v);
    }
    let tags = body.tags.unwrap_or_default();
    let f = state.store.create(cfg, &tags)?;
    if body.publish == Some(true) {
        let (v, _) = state
            .store
            .publish(&ctx.account, &f.name, None, None, None, now_ms())?;
        return Ok(json(
            StatusCode::CREATED,
            &function_configuration(&v, &state.region, Some(&v.version), false),
        ));
    }
    Ok(json(
        StatusCode::CREATED,
        &function_configuration(&f, &state.region, None, false),
    ))
}

/// GetFunction — `GET /2015-03-31/functions/{F}` → 200.
pub fn get(state: &Arc<AppState>, ctx: &Ctx, req: &ApiRequest, f: &str) -> Result<Resp, ApiError> {
    let (r, f) = resolve(state, ctx, f, req.query("Qualifier"))?;
    let mut out = json!({
        "Configuration": function_configuration(&f, &state.region, r.qualifier.as_deref(), false),
        "Code": {"RepositoryType": "S3", "Location": code_location(state, ctx, &f.code_sha256_hex)},
    });
    let tags = state.store.tags(&ctx.account, &f.name)?;
    let reserved = state
        .store
        .with_entry(&ctx.account, &f.name, |e| e.reserved)
        .flatten();
    if let Some(obj) = out.as_object_mut() {
        if !tags.is_empty() {
            obj.insert("Tags".into(), json!(tags));
        }
        if let Some(n) = reserved {
            obj.insert(
                "Concurrency".into(),
                json!({"ReservedConcurrentExecutions": n}),
            );
        }
    }
    Ok(json(StatusCode::OK, &out))
}

/// GetFunctionConfiguration — `GET /2015-03-31/functions/{F}/configuration` → 200.
pub fn get_configuration(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let (r, f) = resolve(state, ctx, f, req.query("Qualifier"))?;
    Ok(json(
        StatusCode::OK,
        &function_configuration(&f, &state.region, r.qualifier.as_deref(), false),
    ))
}

/// ListFunctions — `GET /2015-03-31/functions` → 200; at most 50 a page.
pub fn list(state: &Arc<AppState>, ctx: &Ctx, req: &ApiRequest) -> Result<Resp, ApiError> {
    let max = match req.query("MaxItems") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=10_000).contains(m))
            .ok_or_else(|| {
                ApiError::InvalidParameterValue(format!(
                    "1 validation error detected: Value '{m}' at 'maxItems' failed to satisfy constraint: \
                     Member must have value between 1 and 10000"
                ))
            })?,
        None => 50,
    }
    .min(50);
    let marker = req.query("Marker");
    let all_versions = match req.query("FunctionVersion").as_deref() {
        None => false,
        Some("ALL") => true,
        Some(other) => {
            return Err(ApiError::InvalidParameterValue(format!(
                "1 validation error detected: Value '{other}' at 'functionVersion' failed to satisfy constraint: \
                 Member must satisfy enum value set: [ALL]"
            )));
        }
    };
    let mut all = Vec::new();
    for f in state.store.list(&ctx.account) {
        if all_versions && let Some(e) = state.store.entry(&ctx.account, &f.name) {
            all.push((
                format!("{}:{LATEST}", f.name),
                f.clone(),
                Some(LATEST.to_string()),
            ));
            for (n, v) in &e.versions {
                all.push((
                    format!("{}:{n:010}", f.name),
                    v.clone(),
                    Some(n.to_string()),
                ));
            }
        } else {
            all.push((f.name.clone(), f, None));
        }
    }
    let start = match &marker {
        Some(m) => all
            .iter()
            .position(|(key, _, _)| key.as_str() > m.as_str())
            .unwrap_or(all.len()),
        None => 0,
    };
    let page: Vec<Value> = all[start..]
        .iter()
        .take(max)
        .map(|(_, f, q)| {
            let q = q.as_deref().filter(|q| *q != LATEST);
            function_configuration(f, &state.region, q, true)
        })
        .collect();
    let mut out = json!({ "Functions": page });
    if start + max < all.len()
        && let Some(obj) = out.as_object_mut()
    {
        obj.insert("NextMarker".into(), json!(all[start + max - 1].0));
    }
    Ok(json(StatusCode::OK, &out))
}

/// UpdateFunctionCode — `PUT /2015-03-31/functions/{F}/code` → 200.
pub async fn update_code(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let body: UpdateFunctionCodeRequest = parse_body(&req.body)?;
    let (_, current) = resolve(state, ctx, f, None)?;
    let code = super::wire::FunctionCode {
        zip_file: body.zip_file.clone(),
        s3_bucket: body.s3_bucket.clone(),
        s3_key: None,
        image_uri: body.image_uri.clone(),
    };
    let architectures = match &body.architectures {
        Some(_) => check_architectures(&body.architectures)?,
        None => current.architectures.clone(),
    };
    if let Some(rev) = &body.revision_id
        && *rev != current.revision_id
    {
        return Err(crate::store::StoreError::RevisionMismatch.into());
    }
    let zip = zip_from_code(&code)?;
    if body.dry_run == Some(true) {
        return Ok(json(
            StatusCode::OK,
            &function_configuration(&current, &state.region, None, false),
        ));
    }
    let info = store_code(state, zip).await?;
    let (_, new) = state.store.update::<ApiError>(
        &ctx.account,
        &current.name,
        body.revision_id.as_deref(),
        |c| {
            c.code_sha256_hex = info.sha256_hex.clone();
            c.code_sha256 = info.sha256_b64.clone();
            c.code_size = info.size;
            c.architectures = architectures;
            c.last_modified_ms = now_ms();
            c.revision_id = new_revision();
            Ok(())
        },
    )?;
    state
        .invoker
        .retire_version(&ctx.account, &new.name, LATEST);
    if body.publish == Some(true) {
        let (v, _) = state
            .store
            .publish(&ctx.account, &new.name, None, None, None, now_ms())?;
        return Ok(json(
            StatusCode::OK,
            &function_configuration(&v, &state.region, Some(&v.version), false),
        ));
    }
    Ok(json(
        StatusCode::OK,
        &function_configuration(&new, &state.region, None, false),
    ))
}

/// UpdateFunctionConfiguration — `PUT /2015-03-31/functions/{F}/configuration` → 200. Each
/// member given replaces the stored one wholesale.
pub fn update_configuration(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let body: UpdateFunctionConfigurationRequest = parse_body(&req.body)?;
    let (_, current) = resolve(state, ctx, f, None)?;
    if let Some(r) = &body.runtime {
        check_runtime(state, r)?;
    }
    if let Some(h) = &body.handler {
        model::validate_handler(h)?;
    }
    if let Some(r) = &body.role {
        model::validate_role(r)?;
    }
    if let Some(d) = &body.description {
        model::validate_description(d)?;
    }
    let timeout = body.timeout.map(model::validate_timeout).transpose()?;
    let memory = body.memory_size.map(model::validate_memory).transpose()?;
    let ephemeral = body
        .ephemeral_storage
        .as_ref()
        .map(|e| model::validate_ephemeral(e.size))
        .transpose()?;
    let env = match &body.environment {
        Some(_) => Some(environment(&body.environment)?),
        None => None,
    };
    let tracing = match &body.tracing_config {
        Some(_) => Some(tracing_mode(&body.tracing_config)?),
        None => None,
    };
    if body.layers.as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(ApiError::InvalidParameterValue(
            "Layers are not supported by this Nimbus server yet.".into(),
        ));
    }
    let (_, new) = state.store.update::<ApiError>(
        &ctx.account,
        &current.name,
        body.revision_id.as_deref(),
        |c| {
            if let Some(v) = body.runtime {
                c.runtime = v;
            }
            if let Some(v) = body.handler {
                c.handler = v;
            }
            if let Some(v) = body.role {
                c.role = v;
            }
            if let Some(v) = body.description {
                c.description = v;
            }
            if let Some(v) = timeout {
                c.timeout = v;
            }
            if let Some(v) = memory {
                c.memory_size = v;
            }
            if let Some(v) = ephemeral {
                c.ephemeral_storage = v;
            }
            if let Some(v) = env {
                c.environment = v;
            }
            if let Some(v) = tracing {
                c.tracing_mode = v;
            }
            if let Some(d) = body.dead_letter_config {
                c.dead_letter_target = d.target_arn.filter(|t| !t.is_empty());
            }
            if let Some(k) = body.kms_key_arn {
                c.kms_key_arn = Some(k).filter(|k| !k.is_empty());
            }
            if let Some(v) = body.vpc_config {
                apply_vpc(c, v);
            }
            c.last_modified_ms = now_ms();
            c.revision_id = new_revision();
            Ok(())
        },
    )?;
    state
        .invoker
        .retire_version(&ctx.account, &new.name, LATEST);
    Ok(json(
        StatusCode::OK,
        &function_configuration(&new, &state.region, None, false),
    ))
}

/// DeleteFunction — `DELETE /2015-03-31/functions/{F}` → 204.
pub async fn delete(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let r = parse_ref(state, ctx, f, req.query("Qualifier"))?;
    match r.qualifier.as_deref() {
        None => {
            state
                .store
                .delete(&ctx.account, &r.name)
                .map_err(|_| not_found(state, ctx, &r))?;
            state.invoker.retire_function(&ctx.account, &r.name);
            super::concurrency::apply_reserved(state, &ctx.account, &r.name, None);
            state.queue.forget_function(&ctx.account, &r.name).await?;
        }
        Some(LATEST) => {
            return Err(ApiError::InvalidParameterValue(
                "$LATEST version cannot be deleted without deleting the function.".into(),
            ));
        }
        Some(v) if model::is_version_number(v) => {
            if state.store.get(&ctx.account, &r.name).is_none() {
                return Err(not_found(state, ctx, &r));
            }
            let n: u32 = v.parse().map_err(|_| not_found(state, ctx, &r))?;
            state.store.delete_version(&ctx.account, &r.name, n)?;
            state.invoker.retire_version(&ctx.account, &r.name, v);
        }
        Some(_) => {
            return Err(ApiError::InvalidParameterValue(
                "Deletion of aliases is not supported by DeleteFunction; use DeleteAlias.".into(),
            ));
        }
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// How long a code download link stays valid (AWS: 10 minutes).
const CODE_LINK_SECS: u64 = 600;

fn code_signature(state: &AppState, sha_hex: &str, expires: u64) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&state.url_key) else {
        return String::new();
    };
    mac.update(format!("{sha_hex}:{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn code_location(state: &AppState, ctx: &Ctx, sha_hex: &str) -> String {
    let expires = now_ms() / 1000 + CODE_LINK_SECS;
    format!(
        "http://{}/nimbus/code/{sha_hex}.zip?expires={expires}&signature={}",
        ctx.host,
        code_signature(state, sha_hex, expires)
    )
}

/// `GET /nimbus/code/<sha>.zip?expires=&signature=`: the link GetFunction hands out.
pub fn download_code(
    state: &Arc<AppState>,
    path: &str,
    query: &[(String, String)],
) -> Result<Resp, ApiError> {
    let denied =
        || ApiError::AccessDenied("The code download link is invalid or has expired.".into());
    let sha = path
        .trim_start_matches("/nimbus/code/")
        .trim_end_matches(".zip");
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::ResourceNotFound("No such code package.".into()));
    }
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let expires: u64 = get("expires")
        .and_then(|e| e.parse().ok())
        .ok_or_else(denied)?;
    let sig = get("signature").ok_or_else(denied)?;
    if expires < now_ms() / 1000
        || !constant_time_eq(
            sig.as_bytes(),
            code_signature(state, sha, expires).as_bytes(),
        )
    {
        return Err(denied());
    }
    let bytes = std::fs::read(state.store.code.zip_path(sha))
        .map_err(|_| ApiError::ResourceNotFound("No such code package.".into()))?;
    let mut r = hyper::Response::new(http_body_util::Full::new(Bytes::from(bytes)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/zip"),
    );
    Ok(r)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
