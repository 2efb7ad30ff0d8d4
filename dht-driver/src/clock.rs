//! Time, injected.

use dht_core::Instant;
use futures::future::LocalBoxFuture;

/// Where the driver gets the time and sleeps. Instants are milliseconds since the Unix epoch, so deadlines
/// stored with records stay meaningful across restarts.
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
    /// Completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<'static, ()>;
}

/// The system's wall clock with `futures-timer` sleeps: the operating system's natively, `Date.now()` and
/// `setTimeout` in the browser.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(not(target_arch = "wasm32"))]
    fn now(&self) -> Instant {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Instant::from_millis(ms)
    }

    #[cfg(target_arch = "wasm32")]
    fn now(&self) -> Instant {
        // `std::time::SystemTime` is not available in the browser.
        Instant::from_millis(js_sys::Date::now().max(0.0) as u64)
    }

    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<'static, ()> {
        let wait = deadline.saturating_since(self.now());
        Box::pin(futures_timer::Delay::new(wait))
    }
}
