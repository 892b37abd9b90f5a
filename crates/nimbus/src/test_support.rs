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

/// Field `n` (1-based, as proc(5) numbers them) of `/proc/PID/stat`; `None` once the process
/// is gone (reaped).
pub(crate) fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split(' ').nth(n.checked_sub(3)?).map(str::to_string)
}
