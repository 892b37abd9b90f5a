//! Concurrency accounting: the account limit, reserved concurrency per function, and what
//! is in flight. An invocation holds a [`Permit`] from admission to its end; dropping it
//! gives the unit back, so no path can leak one.
//!
//! A function with reserved concurrency draws only from its reservation; every other
//! function shares what is left of the account limit (`limit − Σ reserved`), as on Lambda.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Per-account counters.
#[derive(Debug)]
pub struct AccountCounters {
    /// Invocations running in the unreserved share.
    unreserved_in_flight: AtomicU32,
    /// Σ reserved concurrency of the account's functions.
    reserved_total: AtomicU32,
    /// Invocations in flight over all accounts (shared by every account's counters), so the
    /// total is one load, not a walk of every function under a lock: the invoker reads it
    /// twice per invocation.
    everyone_in_flight: Arc<AtomicU32>,
}

/// Per-function counters.
#[derive(Debug)]
pub struct FunctionCounters {
    account: Arc<AccountCounters>,
    in_flight: AtomicU32,
    /// Reserved concurrency, or −1 when none is set.
    reserved: AtomicI64,
    throttles: AtomicU64,
}

impl FunctionCounters {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn throttles(&self) -> u64 {
        self.throttles.load(Ordering::Acquire)
    }
}

/// Why an invocation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// `ConcurrentInvocationLimitExceeded`
    Account,
    /// `ReservedFunctionConcurrentInvocationLimitExceeded`
    Reserved,
}

impl Throttle {
    pub fn reason(self) -> &'static str {
        match self {
            Throttle::Account => "ConcurrentInvocationLimitExceeded",
            Throttle::Reserved => "ReservedFunctionConcurrentInvocationLimitExceeded",
        }
    }
}

/// A unit of concurrency, returned on drop.
#[derive(Debug)]
pub struct Permit {
    function: Arc<FunctionCounters>,
    unreserved: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.function.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.function
            .account
            .everyone_in_flight
            .fetch_sub(1, Ordering::AcqRel);
        if self.unreserved {
            self.function
                .account
                .unreserved_in_flight
                .fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The owner of all concurrency counters.
#[derive(Debug)]
pub struct Concurrency {
    limit: u32,
    in_flight: Arc<AtomicU32>,
    accounts: Mutex<HashMap<String, Arc<AccountCounters>>>,
    functions: Mutex<HashMap<(String, String), Arc<FunctionCounters>>>,
}

impl Concurrency {
    pub fn new(limit: u32) -> Self {
        Concurrency {
            limit,
            in_flight: Arc::default(),
            accounts: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    fn account(&self, account: &str) -> Arc<AccountCounters> {
        let mut m = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(account.to_string())
            .or_insert_with(|| {
                Arc::new(AccountCounters {
                    unreserved_in_flight: AtomicU32::new(0),
                    reserved_total: AtomicU32::new(0),
                    everyone_in_flight: self.in_flight.clone(),
                })
            })
            .clone()
    }

    /// The counters of a function (created on first use).
    pub fn function(&self, account: &str, name: &str) -> Arc<FunctionCounters> {
        let mut m = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = m.get(&(account.to_string(), name.to_string())) {
            return f.clone();
        }
        let f = Arc::new(FunctionCounters {
            account: self.account(account),
            in_flight: AtomicU32::new(0),
            reserved: AtomicI64::new(-1),
            throttles: AtomicU64::new(0),
        });
        m.insert((account.to_string(), name.to_string()), f.clone());
        f
    }

    /// Records a function's reserved concurrency (`None`: unset) and the account's total.
    pub fn set_reserved(
        &self,
        account: &str,
        name: &str,
        reserved: Option<u32>,
        account_total: u32,
    ) {
        let f = self.function(account, name);
        f.reserved
            .store(reserved.map_or(-1, i64::from), Ordering::Release);
        f.account
            .reserved_total
            .store(account_total, Ordering::Release);
    }

    /// Admits one invocation of a function, or says why not.
    pub fn admit(&self, f: &Arc<FunctionCounters>) -> Result<Permit, Throttle> {
        let reserved = f.reserved.load(Ordering::Acquire);
        if reserved >= 0 {
            let prev = f.in_flight.fetch_add(1, Ordering::AcqRel);
            f.account.everyone_in_flight.fetch_add(1, Ordering::AcqRel);
            let permit = Permit {
                function: f.clone(),
                unreserved: false,
            };
            if i64::from(prev) >= reserved {
                drop(permit);
                f.throttles.fetch_add(1, Ordering::AcqRel);
                return Err(Throttle::Reserved);
            }
            return Ok(permit);
        }
        let share = self
            .limit
            .saturating_sub(f.account.reserved_total.load(Ordering::Acquire));
        let prev = f
            .account
            .unreserved_in_flight
            .fetch_add(1, Ordering::AcqRel);
        f.in_flight.fetch_add(1, Ordering::AcqRel);
        f.account.everyone_in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = Permit {
            function: f.clone(),
            unreserved: true,
        };
        if prev >= share {
            drop(permit);
            f.throttles.fetch_add(1, Ordering::AcqRel);
            return Err(Throttle::Account);
        }
        Ok(permit)
    }

    /// Invocations in flight over all accounts.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// (account, function, in flight, throttles) of every function seen.
    pub fn snapshot(&self) -> Vec<(String, String, u32, u64)> {
        let m = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|((a, n), f)| (a.clone(), n.clone(), f.in_flight(), f.throttles()))
            .collect()
    }

    /// The least the account must keep unreserved: Lambda's 100 of 1,000, scaled to smaller
    /// configured limits.
    pub fn minimum_unreserved(&self) -> u32 {
        (self.limit / 10).min(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_functions_throttle_exactly_at_their_reservation() {
        let c = Concurrency::new(10);
        c.set_reserved("a", "f", Some(2), 2);
        let f = c.function("a", "f");
        let p1 = c.admit(&f).unwrap();
        let _p2 = c.admit(&f).unwrap();
        assert_eq!(c.admit(&f).unwrap_err(), Throttle::Reserved);
        drop(p1);
        assert!(c.admit(&f).is_ok());
        assert_eq!(f.throttles(), 1);
    }

    #[test]
    fn reservations_shrink_the_share_of_the_others() {
        let c = Concurrency::new(4);
        c.set_reserved("a", "r", Some(3), 3);
        let g = c.function("a", "g");
        let _p = c.admit(&g).unwrap();
        assert_eq!(c.admit(&g).unwrap_err(), Throttle::Account);
        // Another account is not affected.
        let h = c.function("b", "g");
        assert!(c.admit(&h).is_ok());
    }

    #[test]
    fn zero_reserved_throttles_everything() {
        let c = Concurrency::new(10);
        c.set_reserved("a", "f", Some(0), 0);
        let f = c.function("a", "f");
        assert_eq!(c.admit(&f).unwrap_err(), Throttle::Reserved);
    }

    #[test]
    fn the_total_in_flight_counts_every_account_and_not_the_throttled() {
        let c = Concurrency::new(2);
        c.set_reserved("a", "r", Some(1), 1);
        let r = c.function("a", "r");
        let other = c.function("b", "g");
        let p1 = c.admit(&r).unwrap();
        assert_eq!(c.admit(&r).unwrap_err(), Throttle::Reserved);
        let p2 = c.admit(&other).unwrap();
        let _p3 = c.admit(&other).unwrap();
        assert_eq!(c.admit(&other).unwrap_err(), Throttle::Account);
        assert_eq!(c.in_flight(), 3);
        assert_eq!(
            c.in_flight(),
            c.snapshot().iter().map(|(_, _, n, _)| n).sum::<u32>()
        );
        drop((p1, p2));
        assert_eq!(c.in_flight(), 1);
    }

    #[test]
    fn permits_are_returned_on_drop() {
        let c = Concurrency::new(1);
        let f = c.function("a", "f");
        {
            let _p = c.admit(&f).unwrap();
            assert_eq!(c.in_flight(), 1);
        }
        assert_eq!(c.in_flight(), 0);
        assert!(c.admit(&f).is_ok());
    }
}
