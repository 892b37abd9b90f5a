//! PublishVersion and ListVersionsByFunction.

use std::sync::Arc;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::functions::parse_ref;
use super::wire::function_configuration;
use super::{ApiError, ApiRequest, AppState, Ctx, Resp, json, parse_body};
use crate::model::time::now_ms;
use crate::model::{self, LATEST};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishRequest {
    code_sha256: Option<String>,
    description: Option<String>,
    revision_id: Option<String>,
}

/// PublishVersion — `POST /2015-03-31/functions/{F}/versions` → 201.
pub fn publish(
    state: &Arc<AppState>,
    ctx: &Ctx,
    req: &ApiRequest,
    f: &str,
) -> Result<Resp, ApiError> {
    let body: PublishRequest = parse_body(&req.body)?;
    let r = parse_ref(state, ctx, f, None)?;
    if state.store.get(&ctx.account, &r.name).is_none() {
        return Err(ApiError::ResourceNotFound(format!(
            "Function not found: {}",
            model::function_arn(&state.region, &ctx.account, &r.name, None)
        )));
    }
    if let Some(d) = &body.description {
        model::validate_description(d)?;
    }
    let (v, _) = state.store.publish(
        &ctx.account,
        &r.name,
        body.description,
        body.code_sha256.as_deref(),
        body.revision_id.as_deref(),
        now_ms(),
    )?;
    Ok(json(
        StatusCode::CREATED,
        &function_configuration(&v, &state.region, Some(&v.version), false),
    ))
}

/// Parses `MaxItems` (1–10000; at most 50 a page are returned).
pub fn max_items(req: &ApiRequest) -> Result<usize, ApiError> {
    match req.query("MaxItems") {
        None => Ok(50),
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .map(|n| n.min(50))
            .ok_or_else(|| {
                ApiError::InvalidParameterValue(format!(
                    "1 validation error detected: Value '{m}' at 'maxItems' failed to satisfy constraint: \
                     Member must have value between 1 and 10000"
                ))
            }),
    }
}

/// One page of `items` after `Marker` (items are (marker key, value), in order).
pub fn page(
    items: Vec<(String, Value)>,
    req: &ApiRequest,
    member: &str,
) -> Result<Value, ApiError> {
    let max = max_items(req)?;
    let start = match req.query("Marker") {
        Some(m) => items
            .iter()
            .position(|(k, _)| *k > m)
            .unwrap_or(items.len()),
        None => 0,
    };
    let next = (start + max < items.len()).then(|| items[start + max - 1].0.clone());
    let page: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(max)
        .map(|(_, v)| v)
        .collect();
    let mut out = json!({ member: page });
    if let (Some(n), Some(obj)) = (next, out.as_object_mut()) {
        obj.insert("NextMarker".into(), json!(n));
    }
    Ok(out)
}

/// ListVersionsByFunction — `GET /2015-03-31/functions/{F}/versions` → 200; `$LATEST`
/// first, then versions in ascending order.
pub fn list(state: &Arc<AppState>, ctx: &Ctx, req: &ApiRequest, f: &str) -> Result<Resp, ApiError> {
    let r = parse_ref(state, ctx, f, None)?;
    let entry = state.store.entry(&ctx.account, &r.name).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Function not found: {}",
            model::function_arn(&state.region, &ctx.account, &r.name, None)
        ))
    })?;
    let mut items = vec![(
        // Sorts before every zero-padded number.
        "0".to_string(),
        function_configuration(&entry.latest, &state.region, Some(LATEST), true),
    )];
    for (n, v) in &entry.versions {
        items.push((
            format!("{n:010}"),
            function_configuration(v, &state.region, Some(&v.version), true),
        ));
    }
    Ok(json(StatusCode::OK, &page(items, req, "Versions")?))
}
