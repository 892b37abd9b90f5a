//! Aliases: CreateAlias, GetAlias, UpdateAlias, DeleteAlias, ListAliases, with weighted
//! routing between two versions (`RoutingConfig.AdditionalVersionWeights`).

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::functions::parse_ref;
use super::versions::page;
use super::{ApiError, ApiRequest, AppState, Ctx, Resp, empty, json, parse_body};
use crate::model::{self, AliasConfig, LATEST, function_arn};
use crate::store::FunctionEntry;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoutingConfig {
    additional_version_weights: Option<BTreeMap<String, f64>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasRequest {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingConfig>,
    revision_id: Option<String>,
}

fn render(state: &AppState, ctx: &Ctx, function: &str, a: &AliasConfig) -> Value {
    let mut v = json!({
        "AliasArn": function_arn(&state.region, &ctx.account, function, Some(&a.name)),
        "Name": a.name,
        "FunctionVersion": a.function_version,
        "Description": a.description,
        "RevisionId": a.revision_id,
    });
    if !a.additional_weights.is_empty()
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert(
            "RoutingConfig".into(),
            json!({"AdditionalVersionWeights": a.additional_weights}),
        );
    }
    v
}

fn entry(state: &AppState, ctx: &Ctx, f: &str) -> Result<(String, FunctionEntry), ApiError> {
    let r = parse_ref(state, ctx, f, None)?;
    let e = state.store.entry(&ctx.account, &r.name).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Function not found: {}",
            function_arn(&state.region, &ctx.account, &r.name, None)
        ))
    })?;
    Ok((r.name, e))
}

/// Checks a version an alias points to, and the routing weights, as Lambda does.
fn validate(
    state: &AppState,
    ctx: &Ctx,
    name: &str,
    e: &FunctionEntry,
    version: &str,
    weights: &BTreeMap<String, f64>,
) -> Result<(), ApiError> {
    let exists = |v: &str| e.version(v).is_some();
    if !exists(version) {
        return Err(ApiError::ResourceNotFound(format!(
            "Function not found: {}",
            function_arn(&state.region, &ctx.account, name, Some(version))
        )));
    }
    if weights.is_empty() {
        return Ok(());
    }
    if weights.len() > 1 {
        return Err(ApiError::InvalidParameterValue(
            "Number of items in AdditionalVersionWeights cannot be greater than 1".into(),
        ));
    }
    for (v, w) in weights {
        if !(0.0..=1.0).contains(w) || !w.is_finite() {
            return Err(ApiError::InvalidParameterValue(format!(
                "1 validation error detected: Value '{{{v}={w}}}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: \
                 Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0]"
            )));
        }
        if version == LATEST || v == LATEST {
            return Err(ApiError::InvalidParameterValue(
                "$LATEST is not supported for an alias pointing to more than 1 version".into(),
            ));
        }
        if !model::is_version_number(v) {
            return Err(ApiError::InvalidParameterValue(format!(
                "1 validation error detected: Value '{v}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: \
                 Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [0-9]+]"
            )));
        }
        if v == version {
            return Err(ApiError::InvalidParameterValue(format!(
                "Invalid function version {v}. Function version {v} is already included in routing configuration."
            )));
        }
        if !exists(v) {
            return Err(ApiError::InvalidParameterValue(format!(
                "Function version {v} does not exist for function {name}."
            )));
        }
    }
    Ok(())
}

fn alias_not_found(state: &AppState, ctx: &Ctx, function: &str, alias: &str) -> ApiError {
    ApiError::ResourceNotFound(format!(
        "Cannot find alias arn: {}",
        function_arn(&state.region, &ctx.account, function, Some(alias))
    ))
}

/// CreateAlias — `POST /2015-03-31/functions/{F}/aliases` → 201.
pub fn create(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let body: AliasRequest = parse_body(&req.body)?;
    let (name, e) = entry(state, ctx, f)?;
    let alias_name = body
        .name
        .ok_or_else(|| ApiError::InvalidParameterValue("Name is required.".into()))?;
    model::validate_alias_name(&alias_name)?;
    let version = body
        .function_version
        .ok_or_else(|| ApiError::InvalidParameterValue("FunctionVersion is required.".into()))?;
    let description = body.description.unwrap_or_default();
    model::validate_description(&description)?;
    let weights = body
        .routing_config
        .and_then(|r| r.additional_version_weights)
        .unwrap_or_default();
    validate(state, ctx, &name, &e, &version, &weights)?;
    if e.aliases.contains_key(&alias_name) {
        return Err(ApiError::ResourceConflict(format!(
            "Alias already exists: {}",
            function_arn(&state.region, &ctx.account, &name, Some(&alias_name))
        )));
    }
    let a = state.store.put_alias(
        &ctx.account,
        &name,
        AliasConfig {
            name: alias_name,
            function_version: version,
            description,
            additional_weights: weights,
            revision_id: uuid::Uuid::new_v4().to_string(),
        },
        true,
        None,
    )?;
    Ok(json(StatusCode::CREATED, &render(state, ctx, &name, &a)))
}

/// GetAlias — `GET /2015-03-31/functions/{F}/aliases/{Name}` → 200.
pub fn get(state: &Arc<AppState>, ctx: &Ctx, f: &str, alias: &str) -> Result<Resp, ApiError> {
    let (name, e) = entry(state, ctx, f)?;
    let a = e
        .aliases
        .get(alias)
        .ok_or_else(|| alias_not_found(state, ctx, &name, alias))?;
    Ok(json(StatusCode::OK, &render(state, ctx, &name, a)))
}

/// UpdateAlias — `PUT /2015-03-31/functions/{F}/aliases/{Name}` → 200; members given
/// replace the stored ones.
pub fn update(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
    alias: &str,
) -> Result<Resp, ApiError> {
    let body: AliasRequest = parse_body(&req.body)?;
    let (name, e) = entry(state, ctx, f)?;
    let old = e
        .aliases
        .get(alias)
        .ok_or_else(|| alias_not_found(state, ctx, &name, alias))?;
    if let Some(rev) = &body.revision_id
        && *rev != old.revision_id
    {
        return Err(crate::store::StoreError::RevisionMismatch.into());
    }
    let mut new = (**old).clone();
    if let Some(v) = body.function_version {
        new.function_version = v;
    }
    if let Some(d) = body.description {
        model::validate_description(&d)?;
        new.description = d;
    }
    if let Some(r) = body.routing_config {
        new.additional_weights = r.additional_version_weights.unwrap_or_default();
    }
    validate(
        state,
        ctx,
        &name,
        &e,
        &new.function_version,
        &new.additional_weights,
    )?;
    new.revision_id = uuid::Uuid::new_v4().to_string();
    let a = state
        .store
        .put_alias(&ctx.account, &name, new, false, body.revision_id.as_deref())
        .map_err(|e| match e {
            crate::store::StoreError::Missing(_) => alias_not_found(state, ctx, &name, alias),
            e => e.into(),
        })?;
    Ok(json(StatusCode::OK, &render(state, ctx, &name, &a)))
}

/// DeleteAlias — `DELETE /2015-03-31/functions/{F}/aliases/{Name}` → 204.
pub fn delete(state: &Arc<AppState>, ctx: &Ctx, f: &str, alias: &str) -> Result<Resp, ApiError> {
    let (name, _) = entry(state, ctx, f)?;
    if !state.store.delete_alias(&ctx.account, &name, alias)? {
        return Err(alias_not_found(state, ctx, &name, alias));
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// ListAliases — `GET /2015-03-31/functions/{F}/aliases` → 200 (`?FunctionVersion=` filters).
pub fn list(state: &Arc<AppState>, ctx: &Ctx, req: &ApiRequest, f: &str) -> Result<Resp, ApiError> {
    let (name, e) = entry(state, ctx, f)?;
    let filter = req.query("FunctionVersion");
    let items: Vec<(String, Value)> = e
        .aliases
        .values()
        .filter(|a| {
            filter
                .as_deref()
                .is_none_or(|v| a.function_version == v || a.additional_weights.contains_key(v))
        })
        .map(|a| (a.name.clone(), render(state, ctx, &name, a)))
        .collect();
    Ok(json(StatusCode::OK, &page(items, req, "Aliases")?))
}
