//! The CloudWatch Logs subset that serves function logs (JSON 1.1 protocol: `POST /` with
//! `X-Amz-Target: Logs_20140328.<Operation>`): DescribeLogGroups, DescribeLogStreams,
//! GetLogEvents, FilterLogEvents. Enough for `aws logs filter-log-events`, `get-log-events`,
//! boto3, and `nimbus logs --follow`.

use std::sync::Arc;

use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Ctx, Resp, parse_body};
use crate::logs::{GroupPosition, GroupQuery, TimeRange};

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

fn internal(e: std::io::Error) -> ApiError {
    ApiError::Internal(format!("reading a log stream: {e}"))
}

fn bad_token() -> ApiError {
    ApiError::InvalidParameter("The specified nextToken is invalid.".into())
}

/// A GetLogEvents position: `f/<offset>` reads forward from that byte offset of the stream,
/// `b/<offset>` reads the events that end before it. As on AWS, a read at the end answers
/// with the token it was given.
enum StreamToken {
    Forward(u64),
    Backward(u64),
}

impl StreamToken {
    fn parse(token: &str) -> Result<Self, ApiError> {
        let offset = |o: &str| o.parse::<u64>().map_err(|_| bad_token());
        match token.split_once('/') {
            Some(("f", o)) => Ok(StreamToken::Forward(offset(o)?)),
            Some(("b", o)) => Ok(StreamToken::Backward(offset(o)?)),
            _ => Err(bad_token()),
        }
    }
}

fn get_events(state: &AppState, ctx: &Ctx, q: GetEvents) -> Result<Resp, ApiError> {
    if !state.logs.group_exists(&ctx.account, &q.log_group_name) {
        return Err(not_found());
    }
    let range = TimeRange {
        start: q.start_time,
        end: q.end_time,
    };
    let limit = q.limit.unwrap_or(MAX_EVENTS).clamp(1, MAX_EVENTS);
    let token = q
        .next_token
        .as_deref()
        .map(StreamToken::parse)
        .transpose()?;
    let (account, group, stream) = (&ctx.account, &q.log_group_name, &q.log_stream_name);
    let page = match token {
        Some(StreamToken::Forward(o)) => {
            state
                .logs
                .page_forward(account, group, stream, Some(o), range, limit)
        }
        Some(StreamToken::Backward(o)) => {
            state
                .logs
                .page_backward(account, group, stream, Some(o), range, limit)
        }
        // Without a token AWS starts at the newest events unless asked for the oldest.
        None if q.start_from_head == Some(true) => state
            .logs
            .page_forward(account, group, stream, None, range, limit),
        None => state
            .logs
            .page_backward(account, group, stream, None, range, limit),
    }
    .map_err(internal)?;
    let events: Vec<Value> = page
        .events
        .iter()
        .map(|e| json!({"timestamp": e.event.timestamp, "message": e.event.message, "ingestionTime": e.event.timestamp}))
        .collect();
    Ok(logs_json(&json!({
        "events": events,
        "nextForwardToken": format!("f/{}", page.forward),
        "nextBackwardToken": format!("b/{}", page.backward),
    })))
}

/// Characters of a stream name kept as they are in a FilterLogEvents token.
const TOKEN_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'.');

/// A FilterLogEvents token: `<timestamp>-<offset>-<stream, percent-encoded>`, the
/// (timestamp, stream, offset) key at and above which the next page's events are.
fn group_token(p: &GroupPosition) -> String {
    format!(
        "{}-{}-{}",
        p.timestamp,
        p.offset,
        utf8_percent_encode(&p.stream, TOKEN_NAME)
    )
}

fn parse_group_token(token: &str) -> Result<GroupPosition, ApiError> {
    let mut parts = token.splitn(3, '-');
    let (Some(ts), Some(offset), Some(stream)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad_token());
    };
    Ok(GroupPosition {
        timestamp: ts.parse().map_err(|_| bad_token())?,
        offset: offset.parse().map_err(|_| bad_token())?,
        stream: percent_decode_str(stream)
            .decode_utf8()
            .map_err(|_| bad_token())?
            .into_owned(),
    })
}

fn filter_events(state: &AppState, ctx: &Ctx, q: FilterEvents) -> Result<Resp, ApiError> {
    let pattern = q
        .filter_pattern
        .as_deref()
        .map(|p| p.trim().trim_matches('"').to_string())
        .filter(|p| !p.is_empty());
    let from = q.next_token.as_deref().map(parse_group_token).transpose()?;
    let matches = |message: &str| pattern.as_deref().is_none_or(|p| message.contains(p));
    let wanted = |name: &str| {
        q.log_stream_names
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
            && q.log_stream_name_prefix
                .as_deref()
                .is_none_or(|p| name.starts_with(p))
    };
    let query = GroupQuery {
        range: TimeRange {
            start: q.start_time,
            end: q.end_time,
        },
        from: from.as_ref(),
        limit: q.limit.unwrap_or(MAX_EVENTS).clamp(1, MAX_EVENTS),
        matches: &matches,
    };
    let (searched, page) = state
        .logs
        .read_group(&ctx.account, &q.log_group_name, &wanted, &query)
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let events: Vec<Value> = page
        .events
        .iter()
        .map(|(stream, e)| {
            json!({
                "logStreamName": stream,
                "timestamp": e.event.timestamp,
                "message": e.event.message,
                "ingestionTime": e.event.timestamp,
                "eventId": format!("{}-{}-{stream}", e.event.timestamp, e.offset),
            })
        })
        .collect();
    let searched: Vec<Value> = searched
        .into_iter()
        .map(|name| json!({"logStreamName": name, "searchedCompletely": true}))
        .collect();
    let mut out = json!({"events": events, "searchedLogStreams": searched});
    if let (Some(next), Some(obj)) = (&page.next, out.as_object_mut()) {
        obj.insert("nextToken".into(), json!(group_token(next)));
    }
    Ok(logs_json(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_tokens_round_trip_any_stream_name() {
        let p = GroupPosition {
            timestamp: 1_700_000_000_123,
            stream: "2026/01/01/[$LATEST]ab-cd é".into(),
            offset: 4096,
        };
        let token = group_token(&p);
        assert!(token.starts_with("1700000000123-4096-"), "{token}");
        assert_eq!(parse_group_token(&token).unwrap(), p);
    }

    #[test]
    fn unknown_tokens_are_rejected() {
        for t in ["10000", "x-1-s", "1-x-s", "", "1-2"] {
            assert!(parse_group_token(t).is_err(), "{t}");
        }
        for t in ["f/", "b/x", "3", "s/1"] {
            assert!(StreamToken::parse(t).is_err(), "{t}");
        }
        assert!(matches!(
            StreamToken::parse("f/12"),
            Ok(StreamToken::Forward(12))
        ));
        assert!(matches!(
            StreamToken::parse("b/0"),
            Ok(StreamToken::Backward(0))
        ));
    }
}
