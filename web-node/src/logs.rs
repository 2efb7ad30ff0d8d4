//! The tab's log: the node's `tracing` events (its transport's diagnostics above all: dials, offers,
//! refusals, lost connections), at the level the page sets, kept in a bounded ring the page reads and, in
//! the browser, written to the console. Plain Rust, tested natively; the browser hands it its console.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines the ring keeps (the oldest go first).
pub const MAX_LINES: usize = 1000;
/// Characters a line keeps at most (a peer's text in a message cannot make one longer).
pub const MAX_LINE: usize = 512;

/// The levels a page may set, most severe first; the index + 1 is what [`LEVEL`] holds (0: off).
const LEVELS: [(&str, Level); 5] = [
    ("error", Level::ERROR),
    ("warn", Level::WARN),
    ("info", Level::INFO),
    ("debug", Level::DEBUG),
    ("trace", Level::TRACE),
];

/// The most verbose level written (0: nothing; 1: errors ... 5: trace). Warnings by default.
static LEVEL: AtomicU8 = AtomicU8::new(2);

/// The ring of lines.
static LINES: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// Sets the most verbose level written: `off`, `error`, `warn`, `info`, `debug` or `trace`.
pub fn set_level(name: &str) -> Result<(), String> {
    let index = match name {
        "off" => 0,
        _ => match LEVELS.iter().position(|(n, _)| *n == name) {
            Some(i) => i + 1,
            None => return Err(format!("log level {name:?}: one of off, error, warn, info, debug, trace")),
        },
    };
    LEVEL.store(index as u8, Ordering::Relaxed);
    Ok(())
}

/// Whether events of `level` are written now.
fn allows(level: &Level) -> bool {
    let rank = LEVELS.iter().position(|(_, l)| l == level).map_or(u8::MAX, |i| i as u8 + 1);
    rank <= LEVEL.load(Ordering::Relaxed)
}

/// The last `max` lines, oldest first.
pub fn lines(max: usize) -> Vec<String> {
    let ring = LINES.lock().unwrap_or_else(|e| e.into_inner());
    ring.iter().skip(ring.len().saturating_sub(max)).cloned().collect()
}

fn push(line: String) {
    let mut ring = LINES.lock().unwrap_or_else(|e| e.into_inner());
    if ring.len() >= MAX_LINES {
        ring.pop_front();
    }
    ring.push_back(line);
}

/// An event's message, then its other fields as `name=value`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

/// Where lines go besides the ring, and what time it is (ms, for the line's stamp).
#[derive(Clone, Copy)]
pub struct Sinks {
    /// Writes a line (the browser: its console, at the event's level).
    pub write: fn(&Level, &str),
    /// Milliseconds since the epoch.
    pub now_ms: fn() -> f64,
}

/// The layer that writes the tab's log.
pub struct TabLog {
    sinks: Sinks,
}

impl TabLog {
    /// A layer writing to the ring and to `sinks`.
    pub fn new(sinks: Sinks) -> Self {
        TabLog { sinks }
    }

    /// The line for an event: its time of day (UTC, to the ms), level, target, message and fields, cut to
    /// [`MAX_LINE`] characters.
    fn line(&self, meta: &Metadata<'_>, event: &Event<'_>) -> String {
        let mut fields = Line::default();
        event.record(&mut fields);
        let ms = (self.sinks.now_ms)() as u64;
        let (h, m, s, milli) = (ms / 3_600_000 % 24, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        let line = format!(
            "{h:02}:{m:02}:{s:02}.{milli:03} {} {}: {}{}",
            meta.level(),
            meta.target(),
            fields.message,
            fields.fields
        );
        match line.char_indices().nth(MAX_LINE) {
            Some((cut, _)) => line[..cut].to_string(),
            None => line,
        }
    }
}

impl<S: Subscriber> Layer<S> for TabLog {
    // The level can change at any time: every callsite is asked each time.
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        allows(meta.level())
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let line = self.line(meta, event);
        (self.sinks.write)(meta.level(), &line);
        push(line);
    }
}

/// Makes [`TabLog`] the process's subscriber, once (later calls do nothing).
pub fn install(sinks: Sinks) {
    use tracing_subscriber::layer::SubscriberExt;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(TabLog::new(sinks));
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            tracing::warn!("another tracing subscriber was installed first: the tab's log stays empty");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(_: &Level, _: &str) {}

    fn noon() -> f64 {
        12.0 * 3_600_000.0 + 5.0
    }

    #[test]
    fn the_log_keeps_what_its_level_allows_in_a_bounded_ring_of_bounded_lines() {
        install(Sinks { write: quiet, now_ms: noon });
        assert!(set_level("loud").is_err(), "an unknown level is refused");
        set_level("info").unwrap();
        tracing::debug!("not kept");
        tracing::info!(peer = "ab12", "kept");
        let kept = lines(10);
        assert!(kept.iter().all(|l| !l.contains("not kept")), "{kept:?}");
        let last = kept.last().expect("a line");
        assert!(last.starts_with("12:00:00.005 INFO web_node::logs::tests: kept peer=ab12"), "{last}");

        set_level("debug").unwrap();
        tracing::debug!("{}", "é".repeat(2 * MAX_LINE));
        assert_eq!(lines(1)[0].chars().count(), MAX_LINE, "cut at a character boundary");
        for i in 0..MAX_LINES + 5 {
            tracing::warn!(i, "many");
        }
        let all = lines(usize::MAX);
        assert_eq!(all.len(), MAX_LINES);
        assert!(all.last().unwrap().ends_with(&format!("many i={}", MAX_LINES + 4)));
        set_level("off").unwrap();
        tracing::error!("not kept either");
        assert!(lines(1)[0].ends_with(&format!("many i={}", MAX_LINES + 4)));
        set_level("warn").unwrap();
    }
}
