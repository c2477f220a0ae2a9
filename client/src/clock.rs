//! Time as a parameter: [`RefreshingCredentials`](crate::RefreshingCredentials) and the
//! [`Verifier`](crate::Verifier) read the time through a [`Clock`], so tests can drive
//! expiry with a controlled clock instead of sleeping.

use std::sync::Arc;
use std::time::SystemTime;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one place the client reads the wall clock.
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Any `Fn() -> SystemTime` is a clock (handy in tests: `Arc::new(move || manual.now())`).
impl<F> Clock for F
where
    F: Fn() -> SystemTime + Send + Sync + 'static,
{
    fn now(&self) -> SystemTime {
        self()
    }
}

/// The shared clock handle the library passes around.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock as a [`SharedClock`].
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}
