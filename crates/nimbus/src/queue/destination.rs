//! Where the outcome of an asynchronous invocation goes: destination ARNs parsed into the
//! two kinds Nimbus delivers to (another function, invoked asynchronously; a built-in
//! queue named by an SQS ARN), and the payloads they receive — Lambda's destination record
//! (lambda-wire.md §1.10) and, for a dead-letter queue, the original event with the
//! `RequestID` / `ErrorCode` / `ErrorMessage` attributes.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::time::iso8601_z;

/// A validated destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Destination {
    arn: String,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Function {
        account: String,
        name: String,
        qualifier: Option<String>,
    },
    /// A Nimbus built-in queue, readable with SQS's ReceiveMessage.
    Queue { account: String, name: String },
}

/// Why an ARN cannot be a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Fails the model's ARN pattern.
    #[error("the ARN does not match the destination ARN pattern")]
    Pattern,
    /// A service Lambda delivers to but Nimbus does not (SNS, EventBridge, S3).
    #[error("Nimbus does not deliver to {0} destinations")]
    Unsupported(String),
    /// Not a destination service at all, or a malformed resource part.
    #[error("not a valid destination")]
    Invalid,
}

/// The model's destination pattern (the empty string is allowed and means "none").
pub const ARN_PATTERN: &str = r"^$|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:([a-z]{2}((-gov)|(-iso(b?)))?-[a-z]+-\d{1})?:(\d{12})?:(.*)";

/// SQS queue names: 1–80 of `[A-Za-z0-9_-]` (FIFO queues are not destinations).
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_region(r: &str) -> bool {
    // [a-z]{2}(-gov|-iso|-isob)?-[a-z]+-\d
    let parts: Vec<&str> = r.split('-').collect();
    let letters = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    match parts.as_slice() {
        [cc, area, n] => {
            cc.len() == 2
                && letters(cc)
                && letters(area)
                && n.len() == 1
                && n.as_bytes()[0].is_ascii_digit()
        }
        [cc, special, area, n] => {
            cc.len() == 2
                && letters(cc)
                && matches!(*special, "gov" | "iso" | "isob")
                && letters(area)
                && n.len() == 1
                && n.as_bytes()[0].is_ascii_digit()
        }
        _ => false,
    }
}

impl Destination {
    pub fn parse(arn: &str) -> Result<Destination, DestinationError> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(DestinationError::Pattern);
        };
        let pattern_ok = *prefix == "arn"
            && partition.starts_with("aws")
            && partition[3..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !service.is_empty()
            && service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && (region.is_empty() || valid_region(region))
            && (account.is_empty()
                || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())));
        if !pattern_ok {
            return Err(DestinationError::Pattern);
        }
        if account.is_empty() {
            return Err(DestinationError::Invalid);
        }
        let target = match *service {
            "lambda" => {
                let rest: Vec<&str> = resource.split(':').collect();
                let (name, qualifier) = match rest.as_slice() {
                    ["function", name] => (*name, None),
                    ["function", name, q] => (*name, Some(q.to_string())),
                    _ => return Err(DestinationError::Invalid),
                };
                crate::model::validate_function_name(name)
                    .map_err(|_| DestinationError::Invalid)?;
                if let Some(q) = &qualifier {
                    crate::model::validate_qualifier(q).map_err(|_| DestinationError::Invalid)?;
                }
                Target::Function {
                    account: account.to_string(),
                    name: name.to_string(),
                    qualifier,
                }
            }
            "sqs" => {
                if !valid_queue_name(resource) {
                    return Err(DestinationError::Invalid);
                }
                Target::Queue {
                    account: account.to_string(),
                    name: resource.to_string(),
                }
            }
            "sns" => return Err(DestinationError::Unsupported("SNS".into())),
            "events" => return Err(DestinationError::Unsupported("EventBridge".into())),
            "s3" => return Err(DestinationError::Unsupported("S3".into())),
            _ => return Err(DestinationError::Invalid),
        };
        Ok(Destination {
            arn: arn.to_string(),
            target,
        })
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    pub fn account(&self) -> &str {
        match &self.target {
            Target::Function { account, .. } | Target::Queue { account, .. } => account,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

impl TryFrom<String> for Destination {
    type Error = DestinationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Destination::parse(&s)
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        d.arn
    }
}

/// Why a destination record is sent (`requestContext.condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// The function's answer to an attempt, kept for the destination record.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub executed_version: String,
    pub function_error: bool,
    pub payload: Bytes,
}

/// JSON bytes as JSON; anything else as a string (InvokeAsync does not check its payload).
fn json_or_text(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Lambda's destination record.
pub fn record(
    request_id: &str,
    function_arn: &str,
    condition: Condition,
    invoke_count: u32,
    request_payload: &[u8],
    response: Option<&Response>,
    now_ms: u64,
) -> String {
    let mut v = json!({
        "version": "1.0",
        "timestamp": iso8601_z(now_ms),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition.as_str(),
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": json_or_text(request_payload),
    });
    if let (Some(r), Some(obj)) = (response, v.as_object_mut()) {
        let mut ctx = json!({"statusCode": 200, "executedVersion": r.executed_version});
        if r.function_error
            && let Some(c) = ctx.as_object_mut()
        {
            c.insert("functionError".into(), json!("Unhandled"));
        }
        obj.insert("responseContext".into(), ctx);
        obj.insert("responsePayload".into(), json_or_text(&r.payload));
    }
    v.to_string()
}

/// A message attribute of a built-in queue message (SQS `MessageAttributeValue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageAttribute {
    pub data_type: String,
    pub string_value: String,
}

/// What a dead-letter queue receives besides the event: `RequestID`, `ErrorCode` (the
/// status of the last attempt) and `ErrorMessage` (its first kilobyte).
pub fn dead_letter_attributes(
    request_id: &str,
    status: u16,
    message: &str,
) -> BTreeMap<String, MessageAttribute> {
    let mut cut = message.len().min(1024);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let attr = |t: &str, v: String| MessageAttribute {
        data_type: t.into(),
        string_value: v,
    };
    BTreeMap::from([
        (
            "RequestID".to_string(),
            attr("String", request_id.to_string()),
        ),
        ("ErrorCode".to_string(), attr("Number", status.to_string())),
        (
            "ErrorMessage".to_string(),
            attr("String", message[..cut].to_string()),
        ),
    ])
}

/// The `errorMessage` of an error payload, else the payload itself.
pub fn error_message(payload: &[u8]) -> String {
    serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.get("errorMessage")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_function_and_queue_arns() {
        let d = Destination::parse("arn:aws:lambda:us-east-1:123456789012:function:sink").unwrap();
        assert_eq!(
            d.target,
            Target::Function {
                account: "123456789012".into(),
                name: "sink".into(),
                qualifier: None
            }
        );
        let d = Destination::parse("arn:aws:lambda:us-east-1:123456789012:function:sink:$LATEST")
            .unwrap();
        assert!(
            matches!(d.target, Target::Function { qualifier: Some(ref q), .. } if q == "$LATEST")
        );
        let d = Destination::parse("arn:aws:sqs:us-east-2:123456789012:failed-events").unwrap();
        assert_eq!(
            d.target,
            Target::Queue {
                account: "123456789012".into(),
                name: "failed-events".into()
            }
        );
        assert_eq!(d.arn(), "arn:aws:sqs:us-east-2:123456789012:failed-events");
    }

    #[test]
    fn refuses_what_it_cannot_deliver_to() {
        assert_eq!(
            Destination::parse("arn:aws:sns:us-east-1:123456789012:topic"),
            Err(DestinationError::Unsupported("SNS".into()))
        );
        assert_eq!(
            Destination::parse("arn:aws:_-/!lambda:us-east-1:123456789012:function:f"),
            Err(DestinationError::Pattern)
        );
        assert_eq!(
            Destination::parse("not-an-arn"),
            Err(DestinationError::Pattern)
        );
        assert_eq!(
            Destination::parse("arn:aws:dynamodb:us-east-1:123456789012:table/t"),
            Err(DestinationError::Invalid)
        );
        assert_eq!(
            Destination::parse("arn:aws:sqs:us-east-1:123456789012:q.fifo"),
            Err(DestinationError::Invalid)
        );
        assert_eq!(
            Destination::parse("arn:aws:sqs:us-east-1::q"),
            Err(DestinationError::Invalid)
        );
    }

    #[test]
    fn serializes_as_its_arn() {
        let d = Destination::parse("arn:aws:sqs:us-east-1:123456789012:q").unwrap();
        let s = serde_json::to_string(&d).unwrap();
        assert_eq!(s, "\"arn:aws:sqs:us-east-1:123456789012:q\"");
        let back: Destination = serde_json::from_str(&s).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn record_has_lambdas_shape() {
        let r = Response {
            executed_version: "$LATEST".into(),
            function_error: true,
            payload: Bytes::from_static(br#"{"errorMessage":"boom","errorType":"Exception"}"#),
        };
        let text = record(
            "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
            "arn:aws:lambda:us-east-2:123456789012:function:my-function:$LATEST",
            Condition::RetriesExhausted,
            3,
            br#"{"ORDER_IDS":["9e07af03"]}"#,
            Some(&r),
            1_573_755_365_568,
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({
                "version": "1.0",
                "timestamp": "2019-11-14T18:16:05.568Z",
                "requestContext": {
                    "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
                    "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:my-function:$LATEST",
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": 3
                },
                "requestPayload": {"ORDER_IDS": ["9e07af03"]},
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "responsePayload": {"errorMessage": "boom", "errorType": "Exception"}
            })
        );
        let ok = Response {
            executed_version: "$LATEST".into(),
            function_error: false,
            payload: Bytes::from_static(b"null"),
        };
        let v: Value = serde_json::from_str(&record(
            "r",
            "a",
            Condition::Success,
            1,
            b"{}",
            Some(&ok),
            0,
        ))
        .unwrap();
        assert_eq!(
            v["responseContext"],
            json!({"statusCode": 200, "executedVersion": "$LATEST"})
        );
        assert_eq!(v["responsePayload"], Value::Null);
        let v: Value = serde_json::from_str(&record(
            "r",
            "a",
            Condition::EventAgeExceeded,
            0,
            b"not json",
            None,
            0,
        ))
        .unwrap();
        assert_eq!(v["requestPayload"], json!("not json"));
        assert!(v.get("responseContext").is_none());
    }

    #[test]
    fn dead_letter_attributes_cut_the_message_at_one_kilobyte() {
        let long = "é".repeat(600);
        let a = dead_letter_attributes("rid", 200, &long);
        assert_eq!(a["ErrorCode"].string_value, "200");
        assert_eq!(a["ErrorCode"].data_type, "Number");
        assert!(a["ErrorMessage"].string_value.len() <= 1024);
        assert_eq!(a["RequestID"].string_value, "rid");
        assert_eq!(error_message(br#"{"errorMessage":"boom"}"#), "boom");
    }
}
