//! Lambda's retry policy for asynchronous invocations (lambda-wire.md §4.7), as pure
//! functions of times in milliseconds so the dispatcher's decisions are testable without
//! waiting: function errors are retried `MaximumRetryAttempts` times, about one and then two
//! minutes apart; throttles and system errors go back to the queue with exponential backoff
//! from 1 s to 5 min; nothing is retried past the event's maximum age.

use std::time::Duration;

/// Delay before the first retry after a function error: "about one minute" (§4.7); the
/// second retry waits twice as long. `NIMBUS_ASYNC_RETRY_BASE_MS` overrides it (tests).
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(60);
/// Throttle / system-error backoff starts at 1 s ...
pub const THROTTLE_BACKOFF_MIN_MS: u64 = 1_000;
/// ... and doubles up to 5 min (§4.7).
pub const THROTTLE_BACKOFF_MAX_MS: u64 = 300_000;

/// The server-wide part of the policy; the per-function part is the event invoke config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retry_base_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_base_ms: DEFAULT_RETRY_BASE.as_millis() as u64,
        }
    }
}

/// What happens to an event after an invocation that ended in a function error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterError {
    /// Run again at this time (ms since the epoch).
    RetryAt(u64),
    /// All attempts are used: the failure destination / DLQ gets it.
    Exhausted,
}

impl RetryPolicy {
    /// Delay before retry `n` (1-based) after a function error: base × n (1 min, 2 min).
    pub fn retry_delay_ms(&self, n: u32) -> u64 {
        self.retry_base_ms.saturating_mul(u64::from(n.max(1)))
    }

    /// After `invocations` invocations (this one included) of which the last failed.
    /// A retry that would fall after `expires_at_ms` is scheduled at the expiry instead, where
    /// the event is discarded as `EventAgeExceeded` without running again.
    pub fn after_function_error(
        &self,
        max_retries: u32,
        invocations: u32,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> AfterError {
        if invocations > max_retries {
            return AfterError::Exhausted;
        }
        let at = now_ms.saturating_add(self.retry_delay_ms(invocations));
        AfterError::RetryAt(at.min(expires_at_ms))
    }
}

/// Next throttle backoff after `previous_ms` (0: the first throttle).
pub fn next_backoff_ms(previous_ms: u64) -> u64 {
    if previous_ms == 0 {
        THROTTLE_BACKOFF_MIN_MS
    } else {
        previous_ms
            .saturating_mul(2)
            .clamp(THROTTLE_BACKOFF_MIN_MS, THROTTLE_BACKOFF_MAX_MS)
    }
}

/// When a throttled event runs again: after its next backoff, or at its expiry if sooner.
/// Returns (due time, new backoff).
pub fn after_throttle(previous_ms: u64, now_ms: u64, expires_at_ms: u64) -> (u64, u64) {
    let backoff = next_backoff_ms(previous_ms);
    (now_ms.saturating_add(backoff).min(expires_at_ms), backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn function_errors_wait_one_then_two_minutes() {
        let p = RetryPolicy::default();
        let far = u64::MAX;
        assert_eq!(
            p.after_function_error(2, 1, 1_000, far),
            AfterError::RetryAt(1_000 + MIN)
        );
        assert_eq!(
            p.after_function_error(2, 2, 1_000, far),
            AfterError::RetryAt(1_000 + 2 * MIN)
        );
        assert_eq!(
            p.after_function_error(2, 3, 1_000, far),
            AfterError::Exhausted
        );
    }

    #[test]
    fn retry_attempts_zero_means_one_invocation() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.after_function_error(0, 1, 0, u64::MAX),
            AfterError::Exhausted
        );
        assert_eq!(
            p.after_function_error(1, 1, 0, u64::MAX),
            AfterError::RetryAt(MIN)
        );
        assert_eq!(
            p.after_function_error(1, 2, 0, u64::MAX),
            AfterError::Exhausted
        );
    }

    #[test]
    fn a_retry_past_the_maximum_age_is_moved_to_the_expiry() {
        let p = RetryPolicy::default();
        // Enqueued at 0 with a 90 s maximum age: the second retry (2 min later) never runs.
        assert_eq!(
            p.after_function_error(2, 2, 70_000, 90_000),
            AfterError::RetryAt(90_000)
        );
    }

    #[test]
    fn the_base_delay_scales_the_schedule() {
        let p = RetryPolicy { retry_base_ms: 250 };
        assert_eq!(p.retry_delay_ms(1), 250);
        assert_eq!(p.retry_delay_ms(2), 500);
    }

    #[test]
    fn throttle_backoff_doubles_from_one_second_to_five_minutes() {
        let mut b = 0;
        let mut seen = Vec::new();
        for _ in 0..12 {
            b = next_backoff_ms(b);
            seen.push(b / 1000);
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(after_throttle(0, 10_000, u64::MAX), (11_000, 1_000));
        assert_eq!(after_throttle(4_000, 10_000, 15_000), (15_000, 8_000));
    }
}
