//! Metering: per function, invocations, errors, billed milliseconds and GB-seconds at 1 ms
//! granularity, as Lambda bills. Exposed in Prometheus text at `/nimbus/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counters {
    pub invocations: u64,
    pub errors: u64,
    pub billed_ms: u64,
    /// Invocations refused for concurrency or scaling.
    pub throttles: u64,
    /// Megabyte-milliseconds: billed ms × memory size.
    pub mb_ms: u64,
}

/// A metric's name, help text and how to read it from the counters.
type Metric = (&'static str, &'static str, fn(&Counters) -> f64);

/// Usage of every function since the server started.
#[derive(Debug, Default)]
pub struct Usage {
    by_function: Mutex<BTreeMap<(String, String), Counters>>,
}

impl Usage {
    pub fn record(
        &self,
        account: &str,
        name: &str,
        duration: Duration,
        memory_mb: u32,
        error: bool,
    ) {
        let billed = (duration.as_micros().div_ceil(1000) as u64).max(1);
        let Ok(mut map) = self.by_function.lock() else {
            return;
        };
        // Look up before allocating the key: the common case is an existing entry.
        let c = match map.iter_mut().find(|((a, n), _)| a == account && n == name) {
            Some((_, c)) => c,
            None => map
                .entry((account.to_string(), name.to_string()))
                .or_default(),
        };
        c.invocations += 1;
        c.errors += u64::from(error);
        c.billed_ms += billed;
        c.mb_ms += billed * u64::from(memory_mb);
    }

    pub fn record_throttle(&self, account: &str, name: &str) {
        if let Ok(mut map) = self.by_function.lock() {
            map.entry((account.to_string(), name.to_string()))
                .or_default()
                .throttles += 1;
        }
    }

    pub fn get(&self, account: &str, name: &str) -> Counters {
        self.by_function
            .lock()
            .ok()
            .and_then(|m| m.get(&(account.to_string(), name.to_string())).copied())
            .unwrap_or_default()
    }

    /// Prometheus exposition text.
    pub fn render(&self, out: &mut String) {
        let Ok(map) = self.by_function.lock() else {
            return;
        };
        let metrics: [Metric; 5] = [
            ("nimbus_throttles_total", "Invocations refused (429)", |c| {
                c.throttles as f64
            }),
            ("nimbus_invocations_total", "Invocations run", |c| {
                c.invocations as f64
            }),
            (
                "nimbus_function_errors_total",
                "Invocations that ended in a function error",
                |c| c.errors as f64,
            ),
            (
                "nimbus_billed_milliseconds_total",
                "Billed duration, 1 ms granularity",
                |c| c.billed_ms as f64,
            ),
            (
                "nimbus_gb_seconds_total",
                "Billed GB-seconds (memory size x billed duration)",
                |c| c.mb_ms as f64 / 1024.0 / 1000.0,
            ),
        ];
        for (name, help, get) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((account, function), c) in map.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{account=\"{account}\",function=\"{function}\"}} {}",
                    get(c)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bills_each_invocation_rounded_up_to_the_millisecond() {
        let u = Usage::default();
        u.record("a", "f", Duration::from_micros(1_200), 1024, false);
        u.record("a", "f", Duration::from_micros(10), 1024, true);
        let c = u.get("a", "f");
        assert_eq!(c.invocations, 2);
        assert_eq!(c.errors, 1);
        assert_eq!(c.billed_ms, 3);
        assert_eq!(c.mb_ms, 3 * 1024);
        let mut text = String::new();
        u.render(&mut text);
        assert!(text.contains("nimbus_invocations_total{account=\"a\",function=\"f\"} 2"));
    }
}
