//! How an idle CPU waits (`/sys/devices/system/cpu/cpuidle`). On a KVM guest whose idle
//! vCPUs halt without polling first, every message that wakes one costs a VM exit and a host
//! wake-up — most of a warm invoke's latency on an otherwise idle machine
//! (docs/benchmarks.md, "Halted vCPUs"). Read by `nimbus serve` to decide whether to poll
//! while it serves invokes ([`CpuLatencyRequest`], decision 0011) and by the benchmark for its
//! header.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};

const DRIVER: &str = "/sys/devices/system/cpu/cpuidle/current_driver";
const GUEST_HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";
/// The CPU latency PM QoS interface (Documentation/power/pm_qos_interface.rst).
const CPU_DMA_LATENCY: &str = "/dev/cpu_dma_latency";
/// "No constraint": the kernel's default CPU latency (`PM_QOS_CPU_LATENCY_DEFAULT_VALUE`, µs).
const NO_CONSTRAINT_US: i32 = 2_000_000_000;

/// This process's CPU latency request (PM QoS). While it asks for 0 µs, the cpuidle governor
/// keeps idle CPUs in the polling state instead of any state that takes time to leave —
/// halting, on a KVM guest — so waking a task on an idle CPU needs neither an interrupt nor a
/// VM exit: the polling CPU sees the reschedule flag. The request is this process's alone: the
/// kernel drops it when the file is closed, so also when the process dies. Opening needs
/// root (the device is 0600).
#[derive(Debug)]
pub struct CpuLatencyRequest {
    file: File,
}

impl CpuLatencyRequest {
    /// Opens a request that constrains nothing yet.
    pub fn open() -> io::Result<CpuLatencyRequest> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(CPU_DMA_LATENCY)?;
        let request = CpuLatencyRequest { file };
        request.poll(false)?;
        Ok(request)
    }

    /// Asks idle CPUs to poll (`true`: 0 µs) or lifts the constraint (`false`). Changing it
    /// kicks every idle CPU, so they re-select their idle state at once.
    pub fn poll(&self, poll: bool) -> io::Result<()> {
        let us: i32 = if poll { 0 } else { NO_CONSTRAINT_US };
        // A 4-byte write is read as a binary s32 (cpu_latency_qos_write).
        (&self.file).write_all(&us.to_ne_bytes())
    }
}

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
