//! Brute-force defence: a growing delay after each failed login, then a lockout.
//!
//! One [`LockoutState`] is kept per user and one per source IP; the broker calls
//! [`LockoutState::check`] *before* verifying anything (a refused attempt costs no
//! argon2 time and teaches the attacker nothing), then [`LockoutState::record_failure`]
//! or [`LockoutState::record_success`]. Time is a parameter, so the table test below
//! walks the machine on a controlled clock.
//!
//! Expiry is lazy: nothing runs on a timer, old failures and served lockouts are simply
//! ignored (and cleared on the next write) once `now` has moved past them.
//!
//! ```text
//!                       success (any state) ──────────────────────────────┐
//!                                                                         ▼
//!   ┌──────────────┐  fail                ┌─────────────────────┐     ┌───────┐
//!   │    Clear     │─────────────────────▶│ Backoff(n)          │     │ Clear │
//!   │ failures = 0 │◀─────────────────────│ n < max_failures    │     └───────┘
//!   └──────────────┘  now - last_failure  │ refuse until        │
//!          ▲          > reset_after       │ last + delay(n)     │──┐ fail: n += 1
//!          │                              └─────────────────────┘◀─┘ (last = now)
//!          │                                        │ fail and n + 1 >= max_failures
//!          │                                        ▼
//!          │  now >= locked_until         ┌─────────────────────┐
//!          └──────────────────────────────│ Locked              │──┐ fail: ignored
//!                                         │ refuse until        │◀─┘ (check refuses
//!                                         │ now + lockout       │     before verify)
//!                                         └─────────────────────┘
//!
//!   delay(n) = min(base_delay · 2^(n-1), max_delay)
//! ```
//!
//! A per-user lock lets an attacker lock a victim out for `lockout_seconds`; that is the
//! accepted price (the per-IP lock limits who can do it, and the lock is temporary).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Tunables, per deployment (one policy for users, possibly another for IPs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPolicy {
    /// Failures within `reset_after_seconds` that trigger a lockout.
    pub max_failures: u32,
    /// Delay after the first failure; doubles with each further one.
    pub base_delay_ms: u64,
    /// Cap on the back-off delay.
    pub max_delay_ms: u64,
    /// How long a lockout lasts.
    pub lockout_seconds: u64,
    /// Failures older than this are forgotten.
    pub reset_after_seconds: u64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            base_delay_ms: 500,
            max_delay_ms: 8_000,
            lockout_seconds: 900,
            reset_after_seconds: 900,
        }
    }
}

impl LockoutPolicy {
    /// The back-off after the `failures`-th consecutive failure.
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u64.checked_shl(failures - 1).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.base_delay_ms
                .saturating_mul(factor)
                .min(self.max_delay_ms),
        )
    }
}

/// What a recorded failure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockoutTransition {
    /// Still in back-off (or already locked): nothing new to report.
    None,
    /// This failure locked the subject until `until` (worth an audit event).
    Locked {
        /// When the lock ends.
        until: SystemTime,
    },
}

/// Failure history of one user or one source IP. Serializable so the store can keep it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LockoutState {
    failures: u32,
    last_failure_unix_ms: Option<u64>,
    locked_until_unix_ms: Option<u64>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl LockoutState {
    /// `Ok` if an attempt may proceed now; otherwise how long until it may.
    pub fn check(&self, now: SystemTime, policy: &LockoutPolicy) -> Result<(), Duration> {
        let now_ms = unix_ms(now);
        if let Some(until) = self.locked_until_unix_ms.filter(|&u| now_ms < u) {
            // `min` keeps a clock that jumped backwards from promising an absurd wait.
            let lock = Duration::from_secs(policy.lockout_seconds);
            return Err(Duration::from_millis(until - now_ms).min(lock));
        }
        let failures = self.failures_at(now, policy);
        if let (Some(last), true) = (self.last_failure_unix_ms, failures > 0) {
            let delay = policy.delay_after(failures);
            let ready = last.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
            if now_ms < ready {
                return Err(Duration::from_millis(ready - now_ms).min(delay));
            }
        }
        Ok(())
    }

    /// Counts a failed attempt at `now`.
    pub fn record_failure(&mut self, now: SystemTime, policy: &LockoutPolicy) -> LockoutTransition {
        if self.is_locked(now) {
            return LockoutTransition::None;
        }
        let failures = self.failures_at(now, policy).saturating_add(1);
        let now_ms = unix_ms(now);
        *self = Self {
            failures,
            last_failure_unix_ms: Some(now_ms),
            locked_until_unix_ms: None,
        };
        if failures < policy.max_failures {
            return LockoutTransition::None;
        }
        let until = now_ms.saturating_add(policy.lockout_seconds.saturating_mul(1000));
        self.locked_until_unix_ms = Some(until);
        LockoutTransition::Locked {
            until: UNIX_EPOCH + Duration::from_millis(until),
        }
    }

    /// A successful login forgets every failure.
    pub fn record_success(&mut self) {
        *self = Self::default();
    }

    /// When a lockout that has been fully served ended (so its end can be audited once).
    pub fn served_lock(&self, now: SystemTime) -> Option<SystemTime> {
        self.locked_until_unix_ms
            .filter(|&until| unix_ms(now) >= until)
            .map(|until| UNIX_EPOCH + Duration::from_millis(until))
    }

    /// Whether a lockout is in force at `now`.
    pub fn is_locked(&self, now: SystemTime) -> bool {
        self.locked_until_unix_ms
            .is_some_and(|until| unix_ms(now) < until)
    }

    /// Failures that still count at `now` (0 once forgotten or once a lock was served).
    pub fn failures_at(&self, now: SystemTime, policy: &LockoutPolicy) -> u32 {
        let now_ms = unix_ms(now);
        if self
            .locked_until_unix_ms
            .is_some_and(|until| now_ms >= until)
        {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn at(ms_after_t0: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(T0 + ms_after_t0)
    }

    enum Step {
        Fail(u64, LockoutTransition),
        Success,
        Check(u64, Result<(), Duration>),
    }

    #[test]
    fn state_machine_on_a_controlled_clock() {
        use Step::*;
        let p = LockoutPolicy::default(); // 5 failures, 500 ms doubling, 900 s lock/reset
        let ms = Duration::from_millis;
        let none = LockoutTransition::None;
        let locked_at = |t: u64| LockoutTransition::Locked {
            until: at(t + 900_000),
        };
        let steps = [
            Check(0, Ok(())),
            Fail(0, none),
            Check(0, Err(ms(500))),
            Check(499, Err(ms(1))),
            Check(500, Ok(())),
            Fail(1_000, none),
            Check(1_000, Err(ms(1_000))),
            Check(2_000, Ok(())),
            Fail(2_000, none),
            Check(2_000, Err(ms(2_000))),
            Fail(4_000, none),
            Check(4_000, Err(ms(4_000))),
            // Fifth failure locks for 900 s.
            Fail(8_000, locked_at(8_000)),
            Check(8_000, Err(ms(900_000))),
            Check(908_000 - 1, Err(ms(1))),
            // Failures while locked are ignored: the lock is not extended.
            Fail(10_000, none),
            Check(10_000, Err(ms(898_000))),
            // Lock served: everything is forgotten, one failure is back to 500 ms.
            Check(908_000, Ok(())),
            Fail(908_000, none),
            Check(908_000, Err(ms(500))),
            // Success clears.
            Success,
            Check(908_000, Ok(())),
            Fail(909_000, none),
            Fail(910_000, none),
            // Failures older than reset_after are forgotten: this is failure #1 again.
            Fail(910_000 + 900_001, none),
            Check(910_000 + 900_001, Err(ms(500))),
        ];
        let mut state = LockoutState::default();
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Fail(t, want) => assert_eq!(state.record_failure(at(t), &p), want, "step {i}"),
                Success => state.record_success(),
                Check(t, want) => assert_eq!(state.check(at(t), &p), want, "step {i}"),
            }
        }
        assert_eq!(state.failures_at(at(910_000 + 900_001), &p), 1);
    }

    #[test]
    fn delay_doubles_and_is_capped() {
        let p = LockoutPolicy {
            base_delay_ms: 500,
            max_delay_ms: 3_000,
            ..Default::default()
        };
        let got: Vec<u64> = (0..6)
            .map(|n| p.delay_after(n).as_millis() as u64)
            .collect();
        assert_eq!(got, [0, 500, 1_000, 2_000, 3_000, 3_000]);
        assert_eq!(p.delay_after(200), Duration::from_millis(3_000));
    }

    #[test]
    fn is_locked_boundaries() {
        let p = LockoutPolicy {
            max_failures: 1,
            ..Default::default()
        };
        let mut s = LockoutState::default();
        assert!(!s.is_locked(at(0)));
        assert!(matches!(
            s.record_failure(at(0), &p),
            LockoutTransition::Locked { .. }
        ));
        assert!(s.is_locked(at(0)));
        assert!(s.is_locked(at(899_999)));
        assert!(!s.is_locked(at(900_000)));
    }

    #[test]
    fn clock_going_backwards_never_promises_more_than_the_policy() {
        let p = LockoutPolicy::default();
        let mut s = LockoutState::default();
        s.record_failure(at(10_000), &p);
        assert_eq!(s.check(at(0), &p), Err(Duration::from_millis(500)));
    }

    #[test]
    fn serde_round_trip() {
        let p = LockoutPolicy::default();
        let mut s = LockoutState::default();
        s.record_failure(at(0), &p);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LockoutState>(&json).unwrap(), s);
    }
}
