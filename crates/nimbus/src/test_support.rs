//! Helpers shared by the unit tests.

use std::time::{Duration, Instant};

/// Waits until `cond` holds, failing the test after 20 s ("never happened: `what`"). For
/// state a background thread or another process changes; never a timing assertion.
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
