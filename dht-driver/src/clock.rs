//! Time, injected.

use core::time::Duration;
use dht_core::Instant;
use futures::future::LocalBoxFuture;
use std::future::Future;
use std::rc::Rc;

/// Where the driver and its transports get the time and sleep. Instants are milliseconds since the Unix
/// epoch, so deadlines stored with records stay meaningful across restarts, and never go back within a
/// process (deadlines and rates are measured on them).
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
    /// Completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<'static, ()>;
    /// Completes once `wait` has passed, rounded up to the clock's millisecond (so that a wait below a
    /// millisecond still waits).
    fn sleep(&self, wait: Duration) -> LocalBoxFuture<'static, ()> {
        let ms = wait.as_nanos().div_ceil(1_000_000);
        self.sleep_until(self.now() + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
    }
}

/// `f`, or `Err(Elapsed)` once `limit` has passed on `clock`.
pub async fn timeout<C: Clock + ?Sized, F: Future>(clock: &C, limit: Duration, f: F) -> Result<F::Output, Elapsed> {
    use futures::FutureExt;
    futures::select_biased! {
        out = f.fuse() => Ok(out),
        _ = clock.sleep(limit).fuse() => Err(Elapsed),
    }
}

/// What [`timeout`] returns when the time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

/// The system's clock with `futures-timer` sleeps: the operating system's natively, `performance.now()`,
/// `Date.now()` and `setTimeout` in the browser. The Unix time is read once; from then on the clock advances
/// with the monotonic clock (`std::time::Instant`, `performance.now()`), so a wall clock set back does not
/// move it back.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[cfg(not(target_arch = "wasm32"))]
fn monotonic_unix_ms() -> u64 {
    static START: std::sync::OnceLock<(u64, std::time::Instant)> = std::sync::OnceLock::new();
    let (unix_ms, at) = START.get_or_init(|| {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (u64::try_from(unix.as_millis()).unwrap_or(u64::MAX), std::time::Instant::now())
    });
    unix_ms.saturating_add(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX))
}

#[cfg(target_arch = "wasm32")]
fn monotonic_unix_ms() -> u64 {
    // `std::time` is not available in the browser. `performance.now()` is monotonic; where a global has no
    // `performance`, `Date.now()` is used and kept from going back.
    use std::cell::Cell;
    thread_local! {
        static START: Cell<Option<(f64, f64)>> = const { Cell::new(None) };
        static LAST: Cell<f64> = const { Cell::new(0.0) };
    }
    fn performance_now() -> Option<f64> {
        let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).ok()?;
        let now = js_sys::Function::from(js_sys::Reflect::get(&perf, &"now".into()).ok()?);
        now.call0(&perf).ok()?.as_f64()
    }
    let ms = match performance_now() {
        Some(perf) => {
            let (date, perf0) = START.with(|s| *s.get().get_or_insert_with(|| (js_sys::Date::now(), perf)));
            date + (perf - perf0)
        }
        None => js_sys::Date::now(),
    };
    let ms = LAST.with(|last| {
        let ms = ms.max(last.get());
        last.set(ms);
        ms
    });
    ms.max(0.0) as u64
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::from_millis(monotonic_unix_ms())
    }

    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<'static, ()> {
        let wait = deadline.saturating_since(self.now());
        Box::pin(futures_timer::Delay::new(wait))
    }
}

/// One clock shared by a node's driver and its transports (cheap to clone; the system clock by default).
#[derive(Clone)]
pub struct SharedClock(Rc<dyn Clock>);

impl SharedClock {
    /// Shares `clock`.
    pub fn new(clock: impl Clock + 'static) -> Self {
        SharedClock(Rc::new(clock))
    }
}

impl Default for SharedClock {
    fn default() -> Self {
        SharedClock::new(SystemClock)
    }
}

impl core::fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SharedClock(now = {} ms)", self.0.now().as_millis())
    }
}

impl Clock for SharedClock {
    fn now(&self) -> Instant {
        self.0.now()
    }

    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<'static, ()> {
        self.0.sleep_until(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_never_goes_back_and_is_unix_time() {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let mut last = SystemClock.now();
        assert!(last.as_millis().abs_diff(unix) < 60_000, "{} vs {unix}", last.as_millis());
        for _ in 0..10_000 {
            let now = SystemClock.now();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn a_short_sleep_waits_at_least_a_millisecond_and_timeout_fires() {
        let t0 = std::time::Instant::now();
        futures::executor::block_on(SystemClock.sleep(Duration::from_micros(100)));
        assert!(t0.elapsed() >= Duration::from_micros(100));
        let never = futures::future::pending::<()>();
        let r = futures::executor::block_on(timeout(&SystemClock, Duration::from_millis(5), never));
        assert_eq!(r, Err(Elapsed));
        let ready = futures::executor::block_on(timeout(&SharedClock::default(), Duration::from_secs(5), async { 7 }));
        assert_eq!(ready, Ok(7));
    }
}
