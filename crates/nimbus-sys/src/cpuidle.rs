//! How an idle CPU waits (`/sys/devices/system/cpu/cpuidle`). On a KVM guest whose idle
//! vCPUs halt without polling first, every message that wakes one costs a VM exit and a host
//! wake-up — most of a warm invoke's latency on an otherwise idle machine
//! (docs/benchmarks.md, "Halted vCPUs"). Read by `nimbus serve` for a hint and by the
//! benchmark for its header.

use std::fmt;

const DRIVER: &str = "/sys/devices/system/cpu/cpuidle/current_driver";
const GUEST_HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// The cpuidle driver and, for KVM's `haltpoll`, how long the guest polls before halting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuIdle {
    pub driver: String,
    pub guest_halt_poll_ns: Option<u64>,
}

impl CpuIdle {
    /// This machine's; `None` without cpuidle.
    pub fn read() -> Option<CpuIdle> {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        CpuIdle::parse(read(DRIVER)?.as_str(), read(GUEST_HALT_POLL_NS).as_deref())
    }

    fn parse(driver: &str, guest_halt_poll_ns: Option<&str>) -> Option<CpuIdle> {
        let driver = driver.trim();
        (!driver.is_empty()).then(|| CpuIdle {
            driver: driver.to_string(),
            guest_halt_poll_ns: guest_halt_poll_ns
                .filter(|_| driver == "haltpoll")
                .and_then(|ns| ns.trim().parse().ok()),
        })
    }

    /// A KVM guest whose idle vCPUs halt at once.
    pub fn halts_without_polling(&self) -> bool {
        self.guest_halt_poll_ns == Some(0)
    }
}

impl fmt::Display for CpuIdle {
    /// E.g. `haltpoll, guest halt polling off` or `intel_idle`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.guest_halt_poll_ns {
            Some(0) => write!(f, "{}, guest halt polling off", self.driver),
            Some(ns) => write!(
                f,
                "{}, guest halt polling up to {} µs",
                self.driver,
                ns / 1000
            ),
            None => f.write_str(&self.driver),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haltpoll_without_polling_is_recognised_and_described() {
        let idle = CpuIdle::parse("haltpoll\n", Some("0\n")).unwrap();
        assert!(idle.halts_without_polling());
        assert_eq!(idle.to_string(), "haltpoll, guest halt polling off");
        let polling = CpuIdle::parse("haltpoll\n", Some("200000\n")).unwrap();
        assert!(!polling.halts_without_polling());
        assert_eq!(
            polling.to_string(),
            "haltpoll, guest halt polling up to 200 µs"
        );
    }

    #[test]
    fn other_drivers_ignore_the_haltpoll_parameter() {
        let idle = CpuIdle::parse("intel_idle\n", Some("0\n")).unwrap();
        assert!(!idle.halts_without_polling());
        assert_eq!(idle.to_string(), "intel_idle");
        assert_eq!(CpuIdle::parse("  \n", None), None);
    }
}
