//! The CloudWatch Logs subset that serves function logs (JSON 1.1 protocol: `POST /` with
//! `X-Amz-Target: Logs_20140328.<Operation>`): DescribeLogGroups, DescribeLogStreams,
//! GetLogEvents, FilterLogEvents. Enough for `aws logs filter-log-events`, `get-log-events`,
//! boto3, and `nimbus logs --follow`.

use std::sync::Arc;

use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Ctx, Resp, parse_body};

const MAX_EVENTS: usize = 10_000;

fn logs_json(value: &Value) -> Resp {
    let mut r = super::json(StatusCode::OK, value);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    r
}

fn group_arn(state: &AppState, ctx: &Ctx, group: &str) -> String {
    format!(
        "arn:aws:logs:{}:{}:log-group:{group}",
        state.region, ctx.account
    )
}

fn not_found() -> ApiError {
    ApiError::ResourceNotFound("The specified log group does not exist.".into())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DescribeGroups {
    log_group_name_prefix: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeStreams {
    log_group_name: String,
    log_stream_name_prefix: Option<String>,
    descending: Option<bool>,
    order_by: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetEvents {
    log_group_name: String,
    log_stream_name: String,
    start_time: Option<u64>,
    end_time: Option<u64>,
    limit: Option<usize>,
    start_from_head: Option<bool>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterEvents {
    log_group_name: String,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<u64>,
    end_time: Option<u64>,
    filter_pattern: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
}

pub fn dispatch(
    state: &Arc<AppState>,
    ctx: &Ctx,
    target: &str,
    body: &[u8],
) -> Result<Resp, ApiError> {
    match target.strip_prefix("Logs_20140328.") {
        Some("DescribeLogGroups") => describe_groups(state, ctx, parse_body(body)?),
        Some("DescribeLogStreams") => describe_streams(state, ctx, parse_body(body)?),
        Some("GetLogEvents") => get_events(state, ctx, parse_body(body)?),
        Some("FilterLogEvents") => filter_events(state, ctx, parse_body(body)?),
        _ => Err(ApiError::UnknownOperation(format!(
            "Nimbus does not implement the operation {target}."
        ))),
    }
}

fn describe_groups(state: &AppState, ctx: &Ctx, q: DescribeGroups) -> Result<Resp, ApiError> {
    let prefix = q.log_group_name_prefix.unwrap_or_default();
    let groups: Vec<Value> = state
        .logs
        .groups(&ctx.account, &prefix)
        .into_iter()
        .take(q.limit.unwrap_or(50).min(50))
        .map(|(g, created)| {
            json!({"logGroupName": g, "creationTime": created, "arn": format!("{}:*", group_arn(state, ctx, &g)), "storedBytes": 0})
        })
        .collect();
    Ok(logs_json(&json!({ "logGroups": groups })))
}

fn describe_streams(state: &AppState, ctx: &Ctx, q: DescribeStreams) -> Result<Resp, ApiError> {
    let mut streams = state
        .logs
        .streams(&ctx.account, &q.log_group_name)
        .ok_or_else(not_found)?;
    if let Some(p) = &q.log_stream_name_prefix {
        streams.retain(|s| s.name.starts_with(p.as_str()));
    }
    if q.order_by.as_deref() == Some("LastEventTime") {
        streams.sort_by_key(|s| s.last_event.unwrap_or(0));
    }
    if q.descending == Some(true) {
        streams.reverse();
    }
    let out: Vec<Value> = streams
        .into_iter()
        .take(q.limit.unwrap_or(50).min(50))
        .map(|s| {
            let mut v = json!({
                "logStreamName": s.name,
                "creationTime": s.created,
                "arn": format!("{}:log-stream:{}", group_arn(state, ctx, &q.log_group_name), s.name),
                "storedBytes": s.stored_bytes,
            });
            if let (Some(obj), Some(first), Some(last)) = (v.as_object_mut(), s.first_event, s.last_event) {
                obj.insert("firstEventTimestamp".into(), json!(first));
                obj.insert("lastEventTimestamp".into(), json!(last));
                obj.insert("lastIngestionTime".into(), json!(last));
            }
            v
        })
        .collect();
    Ok(logs_json(&json!({ "logStreams": out })))
}

fn in_range(ts: u64, start: Option<u64>, end: Option<u64>) -> bool {
    start.is_none_or(|s| ts >= s) && end.is_none_or(|e| ts < e)
}

fn get_events(state: &AppState, ctx: &Ctx, q: GetEvents) -> Result<Resp, ApiError> {
    if state
        .logs
        .streams(&ctx.account, &q.log_group_name)
        .is_none()
    {
        return Err(not_found());
    }
    let events: Vec<_> = state
        .logs
        .read_stream(&ctx.account, &q.log_group_name, &q.log_stream_name)
        .into_iter()
        .filter(|e| in_range(e.timestamp, q.start_time, q.end_time))
        .collect();
    let limit = q.limit.unwrap_or(MAX_EVENTS).clamp(1, MAX_EVENTS);
    // Tokens are `f/<index>` (forward, resume at index) or `b/<index>` (backward, end at index).
    let (start, end) = match q.next_token.as_deref().and_then(|t| t.split_once('/')) {
        Some(("f", i)) => {
            let i = i.parse::<usize>().unwrap_or(0).min(events.len());
            (i, (i + limit).min(events.len()))
        }
        Some(("b", i)) => {
            let i = i.parse::<usize>().unwrap_or(0).min(events.len());
            (i.saturating_sub(limit), i)
        }
        _ if q.start_from_head == Some(true) => (0, limit.min(events.len())),
        _ => (events.len().saturating_sub(limit), events.len()),
    };
    let page: Vec<Value> = events[start..end]
        .iter()
        .map(|e| json!({"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.timestamp}))
        .collect();
    Ok(logs_json(&json!({
        "events": page,
        "nextForwardToken": format!("f/{end}"),
        "nextBackwardToken": format!("b/{start}"),
    })))
}

fn filter_events(state: &AppState, ctx: &Ctx, q: FilterEvents) -> Result<Resp, ApiError> {
    let streams = state
        .logs
        .streams(&ctx.account, &q.log_group_name)
        .ok_or_else(not_found)?;
    let pattern = q
        .filter_pattern
        .as_deref()
        .map(|p| p.trim().trim_matches('"').to_string())
        .filter(|p| !p.is_empty());
    let mut events = Vec::new();
    let mut searched = Vec::new();
    for s in streams {
        if let Some(names) = &q.log_stream_names
            && !names.contains(&s.name)
        {
            continue;
        }
        if let Some(p) = &q.log_stream_name_prefix
            && !s.name.starts_with(p.as_str())
        {
            continue;
        }
        for (i, e) in state
            .logs
            .read_stream(&ctx.account, &q.log_group_name, &s.name)
            .into_iter()
            .enumerate()
        {
            if in_range(e.timestamp, q.start_time, q.end_time)
                && pattern.as_deref().is_none_or(|p| e.message.contains(p))
            {
                events.push((s.name.clone(), i, e));
            }
        }
        searched.push(json!({"logStreamName": s.name, "searchedCompletely": true}));
    }
    // Stable: by time, then by stream and position, so pages never reorder.
    events.sort_by(|a, b| (a.2.timestamp, &a.0, a.1).cmp(&(b.2.timestamp, &b.0, b.1)));
    let skip = q
        .next_token
        .as_deref()
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = q.limit.unwrap_or(MAX_EVENTS).clamp(1, MAX_EVENTS);
    let total = events.len();
    let page: Vec<Value> = events
        .into_iter()
        .skip(skip)
        .take(limit)
        .map(|(stream, i, e)| {
            json!({
                "logStreamName": stream,
                "timestamp": e.timestamp,
                "message": e.message,
                "ingestionTime": e.timestamp,
                "eventId": format!("{}-{i}-{stream}", e.timestamp),
            })
        })
        .collect();
    let mut out = json!({"events": page, "searchedLogStreams": searched});
    if skip + limit < total
        && let Some(obj) = out.as_object_mut()
    {
        obj.insert("nextToken".into(), json!((skip + limit).to_string()));
    }
    Ok(logs_json(&out))
}
