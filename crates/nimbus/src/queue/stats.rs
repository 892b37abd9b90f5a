//! Counters of the asynchronous path per function since the server started (retries,
//! throttles, events dropped by age, ...), rendered with the queue's gauges (depth, age of
//! the oldest event) for `/nimbus/status` and in Prometheus text for `/nimbus/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::FunctionKey;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub enqueued: u64,
    pub succeeded: u64,
    /// Function-error retries scheduled.
    pub retries: u64,
    /// Attempts that met a throttle or a system error and went back to the queue.
    pub throttles: u64,
    pub retries_exhausted: u64,
    pub dropped_by_age: u64,
    /// Events of functions deleted before they ran.
    pub discarded: u64,
    pub destination_deliveries: u64,
    pub dead_letters: u64,
    /// Destinations or DLQs that could not be delivered to (unsupported, another account).
    pub undeliverable: u64,
}

/// The gauges of one function's queue at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    /// Accepted and not yet completed (in flight included).
    pub depth: u64,
    pub in_flight: u64,
    /// Age of the oldest accepted event, ms.
    pub oldest_age_ms: u64,
}

#[derive(Debug, Default)]
pub(super) struct Stats {
    by_function: Mutex<BTreeMap<FunctionKey, Counters>>,
}

impl Stats {
    pub(super) fn bump(&self, key: &FunctionKey, f: impl FnOnce(&mut Counters)) {
        if let Ok(mut map) = self.by_function.lock() {
            match map.get_mut(key) {
                Some(c) => f(c),
                None => f(map.entry(key.clone()).or_default()),
            }
        }
    }

    pub(super) fn get(&self, key: &FunctionKey) -> Counters {
        self.by_function
            .lock()
            .ok()
            .and_then(|m| m.get(key).copied())
            .unwrap_or_default()
    }

    fn snapshot(&self) -> BTreeMap<FunctionKey, Counters> {
        self.by_function
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// The `AsyncInvocations` member of `/nimbus/status` for one account.
    pub(super) fn status_json(
        &self,
        account: &str,
        gauges: &BTreeMap<FunctionKey, Gauges>,
    ) -> Value {
        let counters = self.snapshot();
        let keys: std::collections::BTreeSet<&FunctionKey> = counters
            .keys()
            .chain(gauges.keys())
            .filter(|k| k.account == account)
            .collect();
        let mut total = 0;
        let functions: Vec<Value> = keys
            .into_iter()
            .map(|k| {
                let c = counters.get(k).copied().unwrap_or_default();
                let g = gauges.get(k).copied().unwrap_or_default();
                total += g.depth;
                json!({
                    "FunctionName": k.name,
                    "QueueDepth": g.depth,
                    "InFlight": g.in_flight,
                    "OldestEventAgeSeconds": g.oldest_age_ms as f64 / 1000.0,
                    "Enqueued": c.enqueued,
                    "Succeeded": c.succeeded,
                    "Retries": c.retries,
                    "Throttles": c.throttles,
                    "RetriesExhausted": c.retries_exhausted,
                    "DroppedByAge": c.dropped_by_age,
                    "Discarded": c.discarded,
                    "DestinationDeliveries": c.destination_deliveries,
                    "DeadLetters": c.dead_letters,
                    "Undeliverable": c.undeliverable,
                })
            })
            .collect();
        json!({"QueuedEvents": total, "Functions": functions})
    }

    /// Prometheus exposition text.
    pub(super) fn render(&self, gauges: &BTreeMap<FunctionKey, Gauges>, out: &mut String) {
        type Gauge = (&'static str, &'static str, fn(&Gauges) -> f64);
        type Counter = (&'static str, &'static str, fn(&Counters) -> u64);
        let g: [Gauge; 3] = [
            (
                "nimbus_async_queue_depth",
                "Asynchronous events accepted and not yet completed",
                |g| g.depth as f64,
            ),
            (
                "nimbus_async_in_flight",
                "Asynchronous events being invoked now",
                |g| g.in_flight as f64,
            ),
            (
                "nimbus_async_oldest_event_age_seconds",
                "Age of the oldest queued asynchronous event",
                |g| g.oldest_age_ms as f64 / 1000.0,
            ),
        ];
        for (name, help, get) in g {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (k, v) in gauges {
                let _ = writeln!(
                    out,
                    "{name}{{account=\"{}\",function=\"{}\"}} {}",
                    k.account,
                    k.name,
                    get(v)
                );
            }
        }
        let counters = self.snapshot();
        let c: [Counter; 9] = [
            (
                "nimbus_async_enqueued_total",
                "Asynchronous events accepted",
                |c| c.enqueued,
            ),
            (
                "nimbus_async_succeeded_total",
                "Asynchronous events that ran successfully",
                |c| c.succeeded,
            ),
            (
                "nimbus_async_retries_total",
                "Retries after function errors",
                |c| c.retries,
            ),
            (
                "nimbus_async_throttles_total",
                "Attempts throttled or failed by the platform, requeued",
                |c| c.throttles,
            ),
            (
                "nimbus_async_retries_exhausted_total",
                "Events that failed all their attempts",
                |c| c.retries_exhausted,
            ),
            (
                "nimbus_async_dropped_by_age_total",
                "Events discarded at their maximum age",
                |c| c.dropped_by_age,
            ),
            (
                "nimbus_async_discarded_total",
                "Events of deleted functions",
                |c| c.discarded,
            ),
            (
                "nimbus_async_destination_deliveries_total",
                "Records sent to destinations",
                |c| c.destination_deliveries,
            ),
            (
                "nimbus_async_dead_letters_total",
                "Events sent to dead-letter queues",
                |c| c.dead_letters,
            ),
        ];
        for (name, help, get) in c {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (k, v) in &counters {
                let _ = writeln!(
                    out,
                    "{name}{{account=\"{}\",function=\"{}\"}} {}",
                    k.account,
                    k.name,
                    get(v)
                );
            }
        }
    }
}
