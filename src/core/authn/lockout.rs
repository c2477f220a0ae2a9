//! Brute-force defence that stops guessing without hurting neighbours and cannot be aimed.
//!
//! A login attempt touches three counters, each one [`LockoutState`] row:
//!
//! - **pair** `(principal, address)`: a growing back-off after each failure. A mistyped
//!   password slows only that principal from that address; it never locks.
//! - **principal** (a user name, or an access key id): counts failures from addresses
//!   that have never logged in as it, and locks it for `lockout_seconds` after
//!   `max_failures` of them. The lock refuses only such strangers: the principal keeps a
//!   bounded list of its *known addresses* (the last `known_addresses` it logged in from
//!   successfully, each forgotten `known_address_days` after its last success), and those
//!   pass (OWASP's "device cookie", keyed on the address). An access key's secret is 240
//!   random bits, so a key is never locked: guesses at it only slow the guessing address.
//! - **address** (an IPv4 address or an IPv6 /64): a budget of `address_budget` failures
//!   per `address_window_seconds`; beyond it each further attempt waits a back-off capped
//!   at `address_max_delay_ms`. Slowed, never blocked, and principals that know the
//!   address are exempt, so a guesser behind a shared NAT does not stop its neighbours.
//!
//! The broker calls [`Gate::check`] *before* verifying anything (a refused attempt costs
//! no argon2 time and teaches nothing), then [`Gate::record_failure`] or
//! [`Gate::record_success`]. Time is a parameter, so the table tests below walk the
//! machines on a controlled clock. Expiry is lazy: old failures and served locks are
//! ignored once `now` has moved past them (the sweeper deletes rows that
//! [`LockoutState::forgettable`] says hold nothing).
//!
//! ```text
//!  pair (principal, address)               principal (counts strangers' failures only)
//!  ┌──────────┐ fail  ┌──────────────┐     ┌───────────┐ fail from a stranger ┌──────────┐
//!  │  Clear   │──────▶│ Backoff(n)   │     │ Counting  │─────────────────────▶│ Counting │
//!  │          │◀──────│ wait until   │──┐  │ n = 0     │◀───── success ───────│ n + 1    │
//!  └──────────┘success│ last+delay(n)│◀─┘  └───────────┘  or quiet reset_after└──────────┘
//!       ▲     or quiet└──────────────┘fail       ▲                    n + 1 = max_failures│
//!       └──── reset_after ──────────────         │ now >= locked_until  ┌──────────────┐  │
//!                                                └──────────────────────│ Locked       │◀─┘
//!  address (IPv4 / IPv6 /64)                       (audited: LockoutEnded) │ refuses only │
//!  ┌───────────────┐ fail: n += 1 ┌──────────────┐                      │ strangers;   │
//!  │ Within budget │─────────────▶│ Over budget  │── fail: n += 1 ──┐   │ (audited:    │
//!  │ n <= budget   │◀─────────────│ wait until   │◀─────────────────┘   │  Lockout)    │
//!  └───────────────┘ window ends  │ last+slow(n) │                      └──────────────┘
//!                                 └──────────────┘
//!  success from an address adds it to the principal's known addresses (most recent
//!  first, at most `known_addresses`); known addresses skip the lock and the budget.
//!
//!  delay(n) = min(base_delay · 2^(n-1), max_delay)
//!  slow(n)  = min(base_delay · 2^(n-budget-1), address_max_delay)
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Tunables, per deployment (validated and bounded in `config.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPolicy {
    /// Failures from unknown addresses within `reset_after_seconds` that lock a principal.
    pub max_failures: u32,
    /// Delay after the first failure; doubles with each further one.
    pub base_delay_ms: u64,
    /// Cap on the per-(principal, address) back-off.
    pub max_delay_ms: u64,
    /// How long a principal's lockout lasts.
    pub lockout_seconds: u64,
    /// Failures older than this are forgotten.
    pub reset_after_seconds: u64,
    /// Failures an address may make per window before it is slowed.
    pub address_budget: u32,
    /// The address budget's window.
    pub address_window_seconds: u64,
    /// Cap on the back-off of an address over its budget.
    pub address_max_delay_ms: u64,
    /// How many known addresses a principal keeps.
    pub known_addresses: u32,
    /// A known address is forgotten this long after its last successful login.
    pub known_address_days: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            base_delay_ms: 500,
            max_delay_ms: 8_000,
            lockout_seconds: 900,
            reset_after_seconds: 900,
            address_budget: 100,
            address_window_seconds: 600,
            address_max_delay_ms: 5_000,
            known_addresses: 16,
            known_address_days: 90,
        }
    }
}

impl LockoutPolicy {
    /// The back-off after the `failures`-th consecutive failure.
    pub fn delay_after(&self, failures: u32) -> Duration {
        doubling(self.base_delay_ms, failures, self.max_delay_ms)
    }

    /// The wait imposed on an address `excess` failures over its budget.
    pub fn address_delay(&self, excess: u32) -> Duration {
        doubling(self.base_delay_ms, excess, self.address_max_delay_ms)
    }

    fn known_ttl_ms(&self) -> u64 {
        u64::from(self.known_address_days).saturating_mul(86_400_000)
    }
}

fn doubling(base_ms: u64, n: u32, cap_ms: u64) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let factor = 1u64.checked_shl(n - 1).unwrap_or(u64::MAX);
    Duration::from_millis(base_ms.saturating_mul(factor).min(cap_ms))
}

/// What a recorded failure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockoutTransition {
    /// Nothing new to report.
    None,
    /// This failure locked the principal until `until` (worth an audit event).
    Locked {
        /// When the lock ends.
        until: SystemTime,
    },
}

/// Why an attempt must wait; the longest wait wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The (principal, address) back-off.
    Backoff(Duration),
    /// The principal is locked against addresses it does not know.
    Locked(Duration),
    /// The address spent its failure budget.
    AddressBudget(Duration),
}

impl Refusal {
    pub fn retry_after(self) -> Duration {
        match self {
            Refusal::Backoff(d) | Refusal::Locked(d) | Refusal::AddressBudget(d) => d,
        }
    }
}

/// An address a principal logged in from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KnownAddress {
    pub address: String,
    pub last_success_unix_ms: u64,
}

/// One counter row (pair, principal or address). Serializable so the store can keep it;
/// rows written before the redesign (`failures`, `last_failure…`, `locked_until…`) still
/// decode.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LockoutState {
    failures: u32,
    last_failure_unix_ms: Option<u64>,
    locked_until_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window_start_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    known: Vec<KnownAddress>,
}

/// How old the most recent known address's time may grow before a success refreshes it.
const KNOWN_REFRESH_MS: u64 = 3_600_000;

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `Err(wait)` while `last + delay` lies ahead of `now` (`min` keeps a clock that jumped
/// backwards from promising more than `delay`).
fn wait_from(last: Option<u64>, delay: Duration, now_ms: u64) -> Option<Duration> {
    let ready = last?.saturating_add(ms(delay));
    (now_ms < ready).then(|| Duration::from_millis(ready - now_ms).min(delay))
}

impl LockoutState {
    /// Whether a lockout is in force at `now`.
    pub fn is_locked(&self, now: SystemTime) -> bool {
        self.locked_until_unix_ms
            .is_some_and(|until| unix_ms(now) < until)
    }

    /// When a lockout that has been fully served ended (so its end can be audited once).
    pub fn served_lock(&self, now: SystemTime) -> Option<SystemTime> {
        self.locked_until_unix_ms
            .filter(|&until| unix_ms(now) >= until)
            .map(|until| UNIX_EPOCH + Duration::from_millis(until))
    }

    /// Clears a served lock and the failures that led to it; known addresses stay.
    pub fn clear_served_lock(&mut self, now: SystemTime) -> Option<SystemTime> {
        let ended = self.served_lock(now)?;
        self.failures = 0;
        self.last_failure_unix_ms = None;
        self.locked_until_unix_ms = None;
        Some(ended)
    }

    /// Failures that still count at `now` (0 once forgotten or once a lock was served).
    pub fn failures_at(&self, now: SystemTime, policy: &LockoutPolicy) -> u32 {
        let now_ms = unix_ms(now);
        if self.served_lock(now).is_some() {
            return 0;
        }
        match self.last_failure_unix_ms {
            Some(last)
                if now_ms.saturating_sub(last)
                    <= policy.reset_after_seconds.saturating_mul(1000) =>
            {
                self.failures
            }
            _ => 0,
        }
    }

    /// Whether `address` logged in successfully as this principal recently enough.
    pub fn knows(&self, address: &str, now: SystemTime, policy: &LockoutPolicy) -> bool {
        let now_ms = unix_ms(now);
        self.known.iter().any(|k| {
            k.address == address
                && now_ms.saturating_sub(k.last_success_unix_ms) < policy.known_ttl_ms()
        })
    }

    /// The known addresses, most recent first.
    pub fn known_addresses(&self) -> impl Iterator<Item = &str> {
        self.known.iter().map(|k| k.address.as_str())
    }

    /// True when the row holds nothing that still matters: no lock, no live failure, no
    /// live budget window, no known address. The sweeper deletes such rows.
    pub fn forgettable(&self, now: SystemTime, policy: &LockoutPolicy) -> bool {
        let now_ms = unix_ms(now);
        let window_live = self.window_start_unix_ms.is_some_and(|start| {
            now_ms.saturating_sub(start) < policy.address_window_seconds.saturating_mul(1000)
        });
        !self.is_locked(now)
            && self.failures_at(now, policy) == 0
            && !window_live
            && !self
                .known
                .iter()
                .any(|k| now_ms.saturating_sub(k.last_success_unix_ms) < policy.known_ttl_ms())
    }

    /// A pair row: wait out the back-off of its failures.
    fn pair_wait(&self, now: SystemTime, policy: &LockoutPolicy) -> Option<Duration> {
        let failures = self.failures_at(now, policy);
        wait_from(
            self.last_failure_unix_ms,
            policy.delay_after(failures),
            unix_ms(now),
        )
    }

    fn pair_fail(&mut self, now: SystemTime, policy: &LockoutPolicy) {
        self.failures = self.failures_at(now, policy).saturating_add(1);
        self.last_failure_unix_ms = Some(unix_ms(now));
    }

    /// An address row: failures in the current window (0 once the window is over).
    fn window_failures(&self, now: SystemTime, policy: &LockoutPolicy) -> u32 {
        let window_ms = policy.address_window_seconds.saturating_mul(1000);
        match self.window_start_unix_ms {
            Some(start) if unix_ms(now).saturating_sub(start) < window_ms => self.failures,
            _ => 0,
        }
    }

    fn address_wait(&self, now: SystemTime, policy: &LockoutPolicy) -> Option<Duration> {
        let excess = self
            .window_failures(now, policy)
            .saturating_sub(policy.address_budget);
        wait_from(
            self.last_failure_unix_ms,
            policy.address_delay(excess),
            unix_ms(now),
        )
    }

    fn address_fail(&mut self, now: SystemTime, policy: &LockoutPolicy) {
        let now_ms = unix_ms(now);
        if self.window_failures(now, policy) == 0 {
            self.window_start_unix_ms = Some(now_ms);
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure_unix_ms = Some(now_ms);
    }

    fn principal_fail(&mut self, now: SystemTime, policy: &LockoutPolicy) -> LockoutTransition {
        if self.is_locked(now) {
            return LockoutTransition::None;
        }
        let now_ms = unix_ms(now);
        self.failures = self.failures_at(now, policy).saturating_add(1);
        self.last_failure_unix_ms = Some(now_ms);
        self.locked_until_unix_ms = None;
        if self.failures < policy.max_failures {
            return LockoutTransition::None;
        }
        let until = now_ms.saturating_add(policy.lockout_seconds.saturating_mul(1000));
        self.locked_until_unix_ms = Some(until);
        LockoutTransition::Locked {
            until: UNIX_EPOCH + Duration::from_millis(until),
        }
    }

    fn principal_success(&mut self, address: &str, now: SystemTime, policy: &LockoutPolicy) {
        let now_ms = unix_ms(now);
        if !self.is_locked(now) {
            self.failures = 0;
            self.last_failure_unix_ms = None;
            self.locked_until_unix_ms = None;
        }
        // The most recent address, seen again within the hour, keeps its time: a service
        // logging in many times a second then leaves the row as it was (and unwritten).
        // Known addresses last days, so an hour of drift changes nothing that matters.
        let refreshed_lately = self.known.first().is_some_and(|k| {
            k.address == address && now_ms.saturating_sub(k.last_success_unix_ms) < KNOWN_REFRESH_MS
        });
        if refreshed_lately {
            return;
        }
        self.known.retain(|k| {
            k.address != address
                && now_ms.saturating_sub(k.last_success_unix_ms) < policy.known_ttl_ms()
        });
        self.known.insert(
            0,
            KnownAddress {
                address: address.to_string(),
                last_success_unix_ms: now_ms,
            },
        );
        self.known
            .truncate(usize::try_from(policy.known_addresses).unwrap_or(usize::MAX));
    }
}

/// The three rows one attempt touches, and whether its principal can be locked
/// (passwords: yes; access keys: never).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gate {
    pub pair: LockoutState,
    pub principal: LockoutState,
    pub address: LockoutState,
}

impl Gate {
    /// `Ok` if an attempt from `address` may proceed now; otherwise the longest wait.
    pub fn check(
        &self,
        address: &str,
        lockable: bool,
        now: SystemTime,
        policy: &LockoutPolicy,
    ) -> Result<(), Refusal> {
        let known = self.principal.knows(address, now, policy);
        let now_ms = unix_ms(now);
        let mut refusals = Vec::new();
        if let Some(wait) = self.pair.pair_wait(now, policy) {
            refusals.push(Refusal::Backoff(wait));
        }
        if lockable
            && !known
            && let Some(until) = self.principal.locked_until_unix_ms.filter(|&u| now_ms < u)
        {
            let lock = Duration::from_secs(policy.lockout_seconds);
            refusals.push(Refusal::Locked(
                Duration::from_millis(until - now_ms).min(lock),
            ));
        }
        if !known && let Some(wait) = self.address.address_wait(now, policy) {
            refusals.push(Refusal::AddressBudget(wait));
        }
        refusals
            .into_iter()
            .max_by_key(|r| r.retry_after())
            .map_or(Ok(()), Err)
    }

    /// Counts a failed attempt from `address`.
    pub fn record_failure(
        &mut self,
        address: &str,
        lockable: bool,
        now: SystemTime,
        policy: &LockoutPolicy,
    ) -> LockoutTransition {
        let known = self.principal.knows(address, now, policy);
        self.pair.pair_fail(now, policy);
        self.address.address_fail(now, policy);
        if lockable && !known {
            self.principal.principal_fail(now, policy)
        } else {
            LockoutTransition::None
        }
    }

    /// A successful login from `address`: the pair forgets its failures, the principal
    /// learns the address (and forgets failures unless locked). The address budget is
    /// untouched, so one valid account cannot refill it for guessing at others.
    pub fn record_success(&mut self, address: &str, now: SystemTime, policy: &LockoutPolicy) {
        self.pair = LockoutState::default();
        self.principal.principal_success(address, now, policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn at(ms_after_t0: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(T0 + ms_after_t0)
    }

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// One step: an address, then what happens at a time after T0.
    enum Step {
        Fail(&'static str, u64, LockoutTransition),
        Success(&'static str, u64),
        Check(&'static str, u64, Result<(), Refusal>),
    }

    /// Runs `steps` against one principal's gate, with one pair and one address row per
    /// address (as the broker keeps them).
    fn run(lockable: bool, policy: &LockoutPolicy, steps: Vec<Step>) {
        use std::collections::HashMap;
        let mut principal = LockoutState::default();
        let mut pairs: HashMap<&str, LockoutState> = HashMap::new();
        let mut addresses: HashMap<&str, LockoutState> = HashMap::new();
        for (i, step) in steps.into_iter().enumerate() {
            let addr = match &step {
                Step::Fail(a, ..) | Step::Success(a, _) | Step::Check(a, ..) => *a,
            };
            let mut gate = Gate {
                pair: pairs.get(addr).cloned().unwrap_or_default(),
                principal: principal.clone(),
                address: addresses.get(addr).cloned().unwrap_or_default(),
            };
            match step {
                Step::Fail(_, t, want) => {
                    assert_eq!(
                        gate.record_failure(addr, lockable, at(t), policy),
                        want,
                        "step {i}"
                    )
                }
                Step::Success(_, t) => gate.record_success(addr, at(t), policy),
                Step::Check(_, t, want) => {
                    assert_eq!(gate.check(addr, lockable, at(t), policy), want, "step {i}")
                }
            }
            pairs.insert(addr, gate.pair);
            addresses.insert(addr, gate.address);
            principal = gate.principal;
        }
    }

    #[test]
    fn pair_back_off_doubles_and_is_forgotten() {
        use Step::*;
        let p = LockoutPolicy {
            max_failures: 100,
            ..Default::default()
        };
        let none = LockoutTransition::None;
        run(
            true,
            &p,
            vec![
                Check("a", 0, Ok(())),
                Fail("a", 0, none),
                Check("a", 0, Err(Refusal::Backoff(d(500)))),
                Check("a", 499, Err(Refusal::Backoff(d(1)))),
                Check("a", 500, Ok(())),
                // Another address is not slowed by a's failures.
                Check("b", 0, Ok(())),
                Fail("a", 1_000, none),
                Check("a", 1_000, Err(Refusal::Backoff(d(1_000)))),
                Fail("a", 2_000, none),
                Check("a", 2_000, Err(Refusal::Backoff(d(2_000)))),
                // Quiet for reset_after: back to the first failure's delay.
                Fail("a", 2_000 + 900_001, none),
                Check("a", 2_000 + 900_001, Err(Refusal::Backoff(d(500)))),
                // Success clears the pair.
                Success("a", 2_000 + 901_000),
                Check("a", 2_000 + 901_000, Ok(())),
            ],
        );
    }

    #[test]
    fn a_lock_refuses_strangers_only_and_ends() {
        use Step::*;
        let p = LockoutPolicy::default(); // 5 failures, 900 s
        let none = LockoutTransition::None;
        let locked = |t: u64| LockoutTransition::Locked {
            until: at(t + 900_000),
        };
        run(
            true,
            &p,
            vec![
                // The owner logged in from "home" once.
                Success("home", 0),
                // A stranger fails 5 times (stepping past its back-off): locked.
                Fail("evil", 10_000, none),
                Fail("evil", 20_000, none),
                Fail("evil", 30_000, none),
                Fail("evil", 40_000, none),
                Fail("evil", 50_000, locked(50_000)),
                Check("evil", 60_000, Err(Refusal::Locked(d(890_000)))),
                // A new address is refused too, but home is not.
                Check("cafe", 60_000, Err(Refusal::Locked(d(890_000)))),
                Check("home", 60_000, Ok(())),
                // Failures from home neither extend nor count toward the lock.
                Fail("home", 61_000, none),
                Check("home", 61_000, Err(Refusal::Backoff(d(500)))),
                Check("home", 61_500, Ok(())),
                // Failures while locked are ignored: the lock is not extended.
                Fail("evil", 100_000, none),
                Check("cafe", 100_000, Err(Refusal::Locked(d(850_000)))),
                // Served: strangers may try again.
                Check("cafe", 950_000, Ok(())),
                Fail("cafe", 950_000, none),
                Check("cafe", 950_000, Err(Refusal::Backoff(d(500)))),
            ],
        );
    }

    #[test]
    fn access_keys_are_never_locked() {
        use Step::*;
        let p = LockoutPolicy::default();
        let none = LockoutTransition::None;
        let mut steps = vec![];
        for i in 0..12 {
            steps.push(Fail("evil", i * 10_000, none));
        }
        steps.push(Check("svc", 120_000, Ok(())));
        // The guessing address is slowed (back-off capped at max_delay).
        steps.push(Fail("evil", 120_000, none));
        steps.push(Check("evil", 120_000, Err(Refusal::Backoff(d(8_000)))));
        run(false, &p, steps);
    }

    #[test]
    fn address_budget_slows_but_never_blocks() {
        let p = LockoutPolicy {
            address_budget: 3,
            address_window_seconds: 60,
            address_max_delay_ms: 2_000,
            ..Default::default()
        };
        // Four principals guessed from one address: each pair is fresh, the address not.
        let mut address = LockoutState::default();
        let gate_for = |t: u64, address: &mut LockoutState| {
            let mut gate = Gate {
                address: address.clone(),
                ..Default::default()
            };
            let result = gate.check("nat", true, at(t), &p);
            gate.record_failure("nat", true, at(t), &p);
            *address = gate.address;
            result
        };
        let got: Vec<_> = [0, 1, 2, 3, 3_000, 3_500, 7_000]
            .iter()
            .map(|&t| gate_for(t, &mut address))
            .collect();
        assert_eq!(
            got,
            vec![
                Ok(()),
                Ok(()),
                Ok(()),
                Ok(()),
                // 4 > 3: slowed 500 ms after each further failure…
                Ok(()),
                // …doubling (5 failures: 1 s), never beyond 2 s.
                Err(Refusal::AddressBudget(d(500))),
                Ok(()),
            ]
        );
        let wait = |t: u64| {
            Gate {
                address: address.clone(),
                ..Default::default()
            }
            .check("nat", true, at(t), &p)
        };
        assert_eq!(wait(7_000), Err(Refusal::AddressBudget(d(2_000))));
        // A principal that knows the address is not slowed by the budget.
        let mut owner = Gate {
            address: address.clone(),
            ..Default::default()
        };
        owner.record_success("nat", at(0), &p);
        owner.pair = LockoutState::default();
        assert_eq!(owner.check("nat", true, at(7_000), &p), Ok(()));
        // The window ends: the budget is whole again.
        assert_eq!(wait(60_001), Ok(()));
    }

    #[test]
    fn known_addresses_are_bounded_most_recent_first_and_expire() {
        let p = LockoutPolicy {
            known_addresses: 3,
            known_address_days: 1,
            ..Default::default()
        };
        let mut s = LockoutState::default();
        for (i, a) in ["a", "b", "c", "d", "b"].iter().enumerate() {
            s.principal_success(a, at(i as u64), &p);
        }
        assert_eq!(s.known_addresses().collect::<Vec<_>>(), ["b", "d", "c"]);
        assert!(s.knows("c", at(0), &p));
        assert!(!s.knows("a", at(0), &p));
        assert!(!s.knows("b", at(4 + 86_400_000), &p));
        assert!(!s.forgettable(at(10), &p));
        assert!(s.forgettable(at(5 + 86_400_000), &p));
    }

    #[test]
    fn forgettable_rows() {
        let p = LockoutPolicy::default();
        let mut gate = Gate::default();
        assert!(gate.pair.forgettable(at(0), &p));
        gate.record_failure("x", true, at(0), &p);
        assert!(!gate.pair.forgettable(at(1), &p));
        assert!(!gate.address.forgettable(at(1), &p));
        assert!(gate.pair.forgettable(at(900_001), &p));
        assert!(gate.address.forgettable(at(900_001), &p));
    }

    #[test]
    fn delays_double_and_are_capped() {
        let p = LockoutPolicy {
            base_delay_ms: 500,
            max_delay_ms: 3_000,
            address_max_delay_ms: 1_000,
            ..Default::default()
        };
        let got: Vec<u64> = (0..6).map(|n| ms(p.delay_after(n))).collect();
        assert_eq!(got, [0, 500, 1_000, 2_000, 3_000, 3_000]);
        assert_eq!(p.delay_after(200), d(3_000));
        assert_eq!(p.address_delay(200), d(1_000));
    }

    #[test]
    fn clock_going_backwards_never_promises_more_than_the_policy() {
        let p = LockoutPolicy::default();
        let mut g = Gate::default();
        g.record_failure("x", true, at(10_000), &p);
        assert_eq!(g.check("x", true, at(0), &p), Err(Refusal::Backoff(d(500))));
    }

    #[test]
    fn old_rows_decode_and_round_trip() {
        let old = r#"{"failures":2,"last_failure_unix_ms":5,"locked_until_unix_ms":null}"#;
        let s: LockoutState = serde_json::from_str(old).unwrap();
        assert_eq!(s.failures, 2);
        let mut g = Gate::default();
        g.record_success("x", at(0), &LockoutPolicy::default());
        let json = serde_json::to_string(&g.principal).unwrap();
        assert_eq!(
            serde_json::from_str::<LockoutState>(&json).unwrap(),
            g.principal
        );
    }
}
