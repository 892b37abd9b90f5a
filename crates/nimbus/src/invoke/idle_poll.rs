//! Idle polling around invocations (decision 0011). On a machine whose idle CPUs halt (a KVM
//! guest without guest halt polling), each of a warm invoke's four wake-ups — client → server
//! → function → server → client — costs an interrupt and a VM exit; together most of the
//! invoke's latency. For [`LINGER`] after an invocation starts and after it ends, the server
//! holds a CPU latency request of 0 µs, so idle CPUs poll and a wake-up is a flag the polling
//! CPU sees. A quick invocation is covered from its request to its answer, and back-to-back
//! ones keep CPUs polling; a long one polls only at its two ends, where the wake-ups are.
//! Polling takes only CPU nobody else wants (it is the idle loop), and stops with the
//! invocations.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::config::IdlePollMode;

/// How long idle CPUs keep polling after the last invocation: sequential invokes from one
/// client are microseconds apart; a sparse trickle should not keep CPUs busy.
pub const LINGER: Duration = Duration::from_millis(2);

/// Whether a server with `--idle-poll mode` polls on this machine: `auto` where idle vCPUs
/// halt without polling first (KVM's `haltpoll` cpuidle driver with `guest_halt_poll_ns` = 0).
pub fn wanted(mode: IdlePollMode) -> bool {
    match mode {
        IdlePollMode::Off => false,
        IdlePollMode::On => true,
        IdlePollMode::Auto => {
            nimbus_sys::cpuidle::CpuIdle::read().is_some_and(|i| i.halts_without_polling())
        }
    }
}

/// What turns polling on and off: the process's CPU latency request, or a recorder in tests.
pub trait Knob: Send + Sync + 'static {
    fn poll(&self, on: bool) -> std::io::Result<()>;
}

impl Knob for nimbus_sys::cpuidle::CpuLatencyRequest {
    fn poll(&self, on: bool) -> std::io::Result<()> {
        nimbus_sys::cpuidle::CpuLatencyRequest::poll(self, on)
    }
}

/// The one owner of the server's latency request. [`IdlePoll::touch`] is the hot path: a clock
/// read and two atomic operations unless polling is off.
pub struct IdlePoll {
    inner: Arc<Inner>,
}

struct Inner {
    knob: Box<dyn Knob>,
    linger: Duration,
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last activity.
    last: AtomicU64,
    polling: AtomicBool,
    /// The knob refused to turn polling on: never tried again (not once per invocation).
    refused: AtomicBool,
    /// Serialises turning polling on and off (never taken while polling stays on).
    switch: Mutex<()>,
    /// The thread that turns polling off after `linger` without activity.
    manager: std::sync::OnceLock<Thread>,
}

impl Inner {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn idle_for(&self) -> Duration {
        Duration::from_nanos(self.now().saturating_sub(self.last.load(Ordering::SeqCst)))
    }
}

impl IdlePoll {
    /// Starts the manager thread; polling begins at the first [`IdlePoll::touch`].
    pub fn start(knob: impl Knob, linger: Duration) -> std::io::Result<IdlePoll> {
        let inner = Arc::new(Inner {
            knob: Box::new(knob),
            linger,
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            polling: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            switch: Mutex::new(()),
            manager: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("nimbus-idle-poll".into())
            .spawn(move || manage(weak))?;
        let _ = inner.manager.set(handle.thread().clone());
        Ok(IdlePoll { inner })
    }

    /// An invocation starts or ends: poll for at least `linger` from now.
    pub fn touch(&self) {
        let inner = &*self.inner;
        inner.last.store(inner.now(), Ordering::SeqCst);
        if inner.polling.load(Ordering::SeqCst) || inner.refused.load(Ordering::Relaxed) {
            return;
        }
        let _switch = inner.switch.lock().unwrap_or_else(|p| p.into_inner());
        if inner.polling.load(Ordering::SeqCst) || inner.refused.load(Ordering::Relaxed) {
            return;
        }
        match inner.knob.poll(true) {
            Ok(()) => {
                inner.polling.store(true, Ordering::SeqCst);
                if let Some(m) = inner.manager.get() {
                    m.unpark();
                }
            }
            Err(e) => {
                inner.refused.store(true, Ordering::Relaxed);
                tracing::warn!("cannot request idle polling, giving it up: {e}");
            }
        }
    }

    /// Whether idle CPUs are asked to poll now.
    pub fn polling(&self) -> bool {
        self.inner.polling.load(Ordering::SeqCst)
    }
}

impl Drop for IdlePoll {
    fn drop(&mut self) {
        if let Some(m) = self.inner.manager.get() {
            m.unpark(); // it finds the `Inner` gone and ends
        }
    }
}

/// Turns polling off once nothing touched it for `linger`.
fn manage(inner: Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        if !i.polling.load(Ordering::SeqCst) {
            drop(i);
            std::thread::park();
            continue;
        }
        let idle = i.idle_for();
        if idle < i.linger {
            let wait = i.linger - idle;
            drop(i);
            std::thread::park_timeout(wait);
            continue;
        }
        let _switch = i.switch.lock().unwrap_or_else(|p| p.into_inner());
        // Off first, then look again: a touch that still saw "on" stored its time before
        // this load, so it is seen here; one that sees "off" waits for the lock and turns
        // polling back on.
        i.polling.store(false, Ordering::SeqCst);
        if i.idle_for() < i.linger {
            i.polling.store(true, Ordering::SeqCst);
            continue;
        }
        if let Err(e) = i.knob.poll(false) {
            tracing::warn!("cannot lift the idle-polling request: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::wait_until;

    /// Records what the knob was told.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<bool>>>);

    impl Knob for Recorder {
        fn poll(&self, on: bool) -> std::io::Result<()> {
            self.0.lock().unwrap().push(on);
            Ok(())
        }
    }

    #[test]
    fn polling_starts_at_activity_and_stops_after_the_linger() {
        let rec = Recorder::default();
        let poll = IdlePoll::start(rec.clone(), Duration::from_millis(20)).unwrap();
        assert!(!poll.polling(), "nothing happened yet");
        assert!(rec.0.lock().unwrap().is_empty());

        poll.touch();
        assert!(poll.polling());
        assert_eq!(*rec.0.lock().unwrap(), [true]);
        wait_until("polling stops", || !poll.polling());
        assert_eq!(*rec.0.lock().unwrap(), [true, false]);

        poll.touch();
        assert!(poll.polling(), "new activity turns it on again");
        wait_until("polling stops again", || !poll.polling());
        assert_eq!(*rec.0.lock().unwrap(), [true, false, true, false]);
    }

    #[test]
    fn continued_activity_keeps_one_request() {
        let rec = Recorder::default();
        let poll = IdlePoll::start(rec.clone(), Duration::from_millis(200)).unwrap();
        // Touches well within the linger, for several lingers' time.
        for _ in 0..100 {
            poll.touch();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(poll.polling());
        wait_until("polling stops", || !poll.polling());
        assert_eq!(
            *rec.0.lock().unwrap(),
            [true, false],
            "switched once each way"
        );
    }

    #[test]
    fn a_knob_that_fails_leaves_polling_off_and_is_not_asked_again() {
        #[derive(Clone, Default)]
        struct Refuses(Arc<AtomicU64>);
        impl Knob for Refuses {
            fn poll(&self, _: bool) -> std::io::Result<()> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            }
        }
        let knob = Refuses::default();
        let poll = IdlePoll::start(knob.clone(), LINGER).unwrap();
        for _ in 0..3 {
            poll.touch();
        }
        assert!(!poll.polling());
        assert_eq!(
            knob.0.load(Ordering::SeqCst),
            1,
            "one failed write, not one per touch"
        );
    }

    #[test]
    fn the_manager_thread_ends_with_its_owner() {
        let rec = Recorder::default();
        let poll = IdlePoll::start(rec.clone(), Duration::from_secs(3600)).unwrap();
        poll.touch();
        let weak = Arc::downgrade(&poll.inner);
        drop(poll);
        wait_until("the state is freed", || weak.upgrade().is_none());
    }
}
