//! The dispatcher driven by a scripted platform under tokio's paused clock: exact retry
//! times, throttle backoff, maximum age, destinations, and restarts on the same database.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::*;
use crate::invoke::{InvokeError, InvokeRequest, InvokeResult};
use crate::model::FunctionConfig;

const ACCOUNT: &str = "123456789012";

#[derive(Clone, Copy, Debug)]
enum Act {
    Ok,
    Fail,
    Throttle,
}

/// A platform whose functions follow a script: per function, what each successive
/// invocation does (the last entry repeats).
#[derive(Default)]
struct Scripted {
    functions: Mutex<HashMap<String, Arc<FunctionConfig>>>,
    script: Mutex<HashMap<String, Vec<Act>>>,
    /// (function, request id, virtual ms since the test began, payload)
    calls: Mutex<Vec<(String, String, u64, Bytes)>>,
    start: Mutex<Option<tokio::time::Instant>>,
}

impl Scripted {
    fn add(&self, name: &str, dlq: Option<&str>, script: Vec<Act>) {
        let cfg = FunctionConfig {
            name: name.into(),
            account: ACCOUNT.into(),
            version: "$LATEST".into(),
            runtime: "python3.11".into(),
            handler: "app.handler".into(),
            role: "arn:aws:iam::123456789012:role/r".into(),
            description: String::new(),
            timeout: 3,
            memory_size: 128,
            environment: BTreeMap::new(),
            code_sha256_hex: "00".into(),
            code_sha256: "AA==".into(),
            code_size: 1,
            last_modified_ms: 0,
            revision_id: "r1".into(),
            ephemeral_storage: 512,
            architectures: vec!["x86_64".into()],
            tracing_mode: "PassThrough".into(),
            dead_letter_target: dlq.map(str::to_string),
            layers: vec![],
            kms_key_arn: None,
            network: true,
            vpc_subnet_ids: vec![],
            vpc_security_group_ids: vec![],
        };
        self.functions
            .lock()
            .unwrap()
            .insert(name.into(), Arc::new(cfg));
        self.script.lock().unwrap().insert(name.into(), script);
    }

    fn calls(&self, name: &str) -> Vec<(String, u64, Bytes)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == name)
            .map(|c| (c.1.clone(), c.2, c.3.clone()))
            .collect()
    }
}

impl Platform for Scripted {
    fn function(
        &self,
        account: &str,
        name: &str,
        qualifier: Option<&str>,
    ) -> Option<Arc<FunctionConfig>> {
        assert_eq!(account, ACCOUNT);
        if qualifier.is_some_and(|q| q != "$LATEST") {
            return None;
        }
        self.functions.lock().unwrap().get(name).cloned()
    }

    fn invoke(
        &self,
        req: InvokeRequest,
    ) -> Pin<Box<dyn Future<Output = Result<InvokeResult, InvokeError>> + Send + '_>> {
        let start = *self
            .start
            .lock()
            .unwrap()
            .get_or_insert_with(tokio::time::Instant::now);
        let name = req.function.name.clone();
        let n = self.calls(&name).len();
        let act = {
            let script = self.script.lock().unwrap();
            let s = &script[&name];
            s[n.min(s.len() - 1)]
        };
        self.calls.lock().unwrap().push((
            name,
            req.request_id.to_string(),
            start.elapsed().as_millis() as u64,
            req.payload.clone(),
        ));
        Box::pin(async move {
            match act {
                Act::Ok => Ok(InvokeResult {
                    payload: Bytes::from_static(br#"{"ok":true}"#),
                    content_type: None,
                    function_error: false,
                    executed_version: "$LATEST".into(),
                    log_tail: None,
                }),
                Act::Fail => Ok(InvokeResult {
                    payload: Bytes::from_static(
                        br#"{"errorMessage":"boom","errorType":"Exception"}"#,
                    ),
                    content_type: None,
                    function_error: true,
                    executed_version: "$LATEST".into(),
                    log_tail: None,
                }),
                Act::Throttle => Err(InvokeError::Throttled {
                    reason: "ConcurrentInvocationLimitExceeded",
                }),
            }
        })
    }
}

fn open(dir: &std::path::Path, platform: Arc<Scripted>) -> EventQueue {
    let config = QueueConfig {
        region: "us-east-1".into(),
        retry: retry::RetryPolicy::default(),
        parallelism: 8,
    };
    EventQueue::open(dir, config, platform).unwrap()
}

fn event(function: &str, rid: &str) -> NewEvent {
    NewEvent {
        account: ACCOUNT.into(),
        function: function.into(),
        qualifier: None,
        request_id: rid.into(),
        payload: Bytes::from_static(br#"{"order":7}"#),
    }
}

async fn set_config(q: &EventQueue, function: &str, cfg: EventInvokeConfig) {
    q.change_invoke_config::<QueueError>(ACCOUNT, function, "$LATEST", |_| Ok(cfg))
        .await
        .unwrap();
}

fn dest(arn: &str) -> Option<Destination> {
    Some(Destination::parse(arn).unwrap())
}

/// Lets the dispatcher run until `cond` holds, advancing the paused clock as it needs.
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn receive_all(q: &EventQueue, name: &str) -> Vec<ReceivedMessage> {
    q.receive(ACCOUNT, name, 10, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn function_errors_are_retried_after_one_then_two_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(Scripted::default());
    p.add("f", None, vec![Act::Fail, Act::Fail, Act::Ok]);
    let q = open(dir.path(), p.clone());
    set_config(
        &q,
        "f",
        EventInvokeConfig {
            on_success: dest("arn:aws:sqs:us-east-1:123456789012:done"),
            ..Default::default()
        },
    )
    .await;
    q.start();
    q.enqueue(event("f", "rid-1")).await.unwrap();
    until("three attempts", Duration::from_secs(600), || {
        p.calls("f").len() == 3
    })
    .await;
    let calls = p.calls("f");
    assert!(
        calls.iter().all(|c| c.0 == "rid-1"),
        "retries keep the request id"
    );
    let gaps: Vec<u64> = calls.windows(2).map(|w| w[1].1 - w[0].1).collect();
    // The paused clock makes the delays exact up to the dispatcher's own bookkeeping.
    assert!((60_000..60_100).contains(&gaps[0]), "{gaps:?}");
    assert!((120_000..120_100).contains(&gaps[1]), "{gaps:?}");
    until("the success record", Duration::from_secs(5), || {
        q.counters(ACCOUNT, "f").succeeded == 1
    })
    .await;
    let msgs = receive_all(&q, "done").await;
    assert_eq!(msgs.len(), 1);
    let record: Value = serde_json::from_str(&msgs[0].body).unwrap();
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["requestContext"]["requestId"], "rid-1");
    assert_eq!(record["requestPayload"]["order"], 7);
    assert_eq!(record["responsePayload"]["ok"], true);
    let c = q.counters(ACCOUNT, "f");
    assert_eq!((c.retries, c.retries_exhausted, c.enqueued), (2, 0, 1));
    assert!(q.gauges().is_empty(), "nothing left queued");
    // No fourth attempt ever comes.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(p.calls("f").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_go_to_the_failure_destination_and_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(Scripted::default());
    p.add(
        "f",
        Some("arn:aws:sqs:us-east-1:123456789012:dlq"),
        vec![Act::Fail],
    );
    let q = open(dir.path(), p.clone());
    set_config(
        &q,
        "f",
        EventInvokeConfig {
            maximum_retry_attempts: Some(1),
            on_failure: dest("arn:aws:sqs:us-east-1:123456789012:failed"),
            ..Default::default()
        },
    )
    .await;
    q.start();
    q.enqueue(event("f", "rid-2")).await.unwrap();
    until("retries exhausted", Duration::from_secs(600), || {
        q.counters(ACCOUNT, "f").retries_exhausted == 1
    })
    .await;
    assert_eq!(
        p.calls("f").len(),
        2,
        "MaximumRetryAttempts 1: two invocations"
    );
    let failed = receive_all(&q, "failed").await;
    let record: Value = serde_json::from_str(&failed[0].body).unwrap();
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 2);
    assert_eq!(
        record["requestContext"]["functionArn"],
        "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST"
    );
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(record["responsePayload"]["errorMessage"], "boom");
    let dead = receive_all(&q, "dlq").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].body, r#"{"order":7}"#,
        "the DLQ receives the original event"
    );
    assert_eq!(dead[0].attributes["RequestID"].string_value, "rid-2");
    assert_eq!(dead[0].attributes["ErrorCode"].string_value, "200");
    assert_eq!(dead[0].attributes["ErrorMessage"].string_value, "boom");
}

#[tokio::test(start_paused = true)]
async fn throttled_events_back_off_from_one_second_and_are_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(Scripted::default());
    p.add(
        "f",
        None,
        vec![
            Act::Throttle,
            Act::Throttle,
            Act::Throttle,
            Act::Throttle,
            Act::Ok,
        ],
    );
    let q = open(dir.path(), p.clone());
    q.start();
    q.enqueue(event("f", "rid-3")).await.unwrap();
    until("success", Duration::from_secs(600), || {
        q.counters(ACCOUNT, "f").succeeded == 1
    })
    .await;
    let times: Vec<u64> = p.calls("f").iter().map(|c| c.1).collect();
    let gaps: Vec<u64> = times
        .windows(2)
        .map(|w| (w[1] - w[0] + 50) / 1000)
        .collect();
    assert_eq!(gaps, [1, 2, 4, 8]);
    let c = q.counters(ACCOUNT, "f");
    assert_eq!(
        (c.throttles, c.retries, c.succeeded),
        (4, 0, 1),
        "throttles are not retries"
    );
}

#[tokio::test(start_paused = true)]
async fn events_past_their_maximum_age_are_discarded_to_the_failure_destination() {
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(Scripted::default());
    p.add(
        "f",
        Some("arn:aws:sqs:us-east-1:123456789012:dlq"),
        vec![Act::Throttle],
    );
    p.add("sink", None, vec![Act::Ok]);
    let q = open(dir.path(), p.clone());
    set_config(
        &q,
        "f",
        EventInvokeConfig {
            maximum_event_age_s: Some(60),
            on_failure: dest("arn:aws:lambda:us-east-1:123456789012:function:sink"),
            ..Default::default()
        },
    )
    .await;
    q.start();
    q.enqueue(event("f", "rid-4")).await.unwrap();
    until("the record at the sink", Duration::from_secs(600), || {
        !p.calls("sink").is_empty()
    })
    .await;
    let last_try = p.calls("f").last().unwrap().1;
    let sink = p.calls("sink");
    assert!(
        (60_000..61_000).contains(&sink[0].1),
        "discarded at its maximum age: {}",
        sink[0].1
    );
    assert!(last_try < 60_000);
    assert_ne!(
        sink[0].0, "rid-4",
        "the destination invocation has its own request id"
    );
    let record: Value = serde_json::from_slice(&sink[0].2).unwrap();
    assert_eq!(record["requestContext"]["condition"], "EventAgeExceeded");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 0);
    assert!(record.get("responseContext").is_none());
    let dead = receive_all(&q, "dlq").await;
    assert_eq!(dead[0].attributes["ErrorCode"].string_value, "429");
    assert_eq!(q.counters(ACCOUNT, "f").dropped_by_age, 1);
}

#[tokio::test(start_paused = true)]
async fn a_restart_runs_what_was_queued_with_the_same_request_id_and_attempt_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(Scripted::default());
    // The first attempt fails (and is recorded); every later one meets a throttle, so all
    // five events are still queued when the server "crashes".
    p.add("f", None, vec![Act::Fail, Act::Throttle]);
    let q = open(dir.path(), p.clone());
    set_config(
        &q,
        "f",
        EventInvokeConfig {
            on_success: dest("arn:aws:sqs:us-east-1:123456789012:done"),
            ..Default::default()
        },
    )
    .await;
    let dispatcher = q.start();
    for i in 0..5 {
        q.enqueue(event("f", &format!("rid-{i}"))).await.unwrap();
    }
    until("the first failure", Duration::from_secs(10), || {
        q.counters(ACCOUNT, "f").retries == 1
    })
    .await;
    // "Crash": stop dispatching and drop the queue without any shutdown step.
    dispatcher.abort();
    drop(q);
    let p2 = Arc::new(Scripted::default());
    p2.add("f", None, vec![Act::Ok]);
    let q = open(dir.path(), p2.clone());
    assert_eq!(q.gauges()[&FunctionKey::new(ACCOUNT, "f")].depth, 5);
    q.start();
    until("all five", Duration::from_secs(600), || {
        p2.calls("f").len() == 5
    })
    .await;
    until("all recorded", Duration::from_secs(5), || {
        q.counters(ACCOUNT, "f").succeeded == 5
    })
    .await;
    let mut ids: Vec<String> = p2.calls("f").into_iter().map(|c| c.0).collect();
    ids.sort();
    assert_eq!(ids, ["rid-0", "rid-1", "rid-2", "rid-3", "rid-4"]);
    let records = q
        .receive(ACCOUNT, "done", 10, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap();
    let counts: Vec<u64> = records
        .iter()
        .map(|m| serde_json::from_str::<Value>(&m.body).unwrap()["requestContext"]["approximateInvokeCount"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.len(), 5);
    assert_eq!(
        counts.iter().filter(|c| **c == 2).count(),
        1,
        "the recorded failure survived: {counts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn events_of_deleted_functions_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(Scripted::default());
    let q = open(dir.path(), p.clone());
    q.start();
    q.enqueue(event("gone", "rid-5")).await.unwrap();
    until("discarded", Duration::from_secs(10), || {
        q.counters(ACCOUNT, "gone").discarded == 1
    })
    .await;
    assert!(q.gauges().is_empty());
}

#[tokio::test(start_paused = true)]
async fn messages_stay_hidden_for_their_visibility_timeout_until_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), Arc::new(Scripted::default()));
    let shared = q.shared.clone();
    shared
        .journal
        .write(|c| {
            journal::insert_message(
                c,
                &NewMessage {
                    account: ACCOUNT.into(),
                    queue: "q".into(),
                    body: "hello".into(),
                    attributes: BTreeMap::new(),
                },
                0,
            )
        })
        .await
        .unwrap();
    let first = q
        .receive(ACCOUNT, "q", 10, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        q.receive(ACCOUNT, "q", 10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    let again = q
        .receive(ACCOUNT, "q", 10, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(again[0].receive_count, 2);
    assert_ne!(again[0].receipt, first[0].receipt);
    assert!(
        q.delete_message(ACCOUNT, "q", &again[0].receipt)
            .await
            .unwrap()
    );
    assert_eq!(q.queue_counts(ACCOUNT, "q").await.unwrap().0, 0);
    assert_eq!(q.list_queues(ACCOUNT, "").await.unwrap(), ["q"]);
}

#[tokio::test]
async fn concurrent_enqueues_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), Arc::new(Scripted::default()));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                q.enqueue(event("f", &format!("{t}-{i}"))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(q.gauges()[&FunctionKey::new(ACCOUNT, "f")].depth, 3200);
    // 3,200 fsync'd commits one by one would take seconds at this disk's ~3 ms per fsync.
    eprintln!(
        "3200 durable enqueues in {elapsed:?} ({:.0}/s)",
        3200.0 / elapsed.as_secs_f64()
    );
}
