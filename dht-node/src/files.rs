//! Files through the control socket: `PUBLISH <path>` and `FETCH <hash> <path>` stream `PROGRESS <done>
//! <total>` lines (about five a second) before their answer line; the client draws them as a progress bar.

use dht_core::Key;
use dht_driver::NodeHandle;
use dht_files::{fs, FetchOptions, PublishOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::cell::Cell;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How often a long request reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// `PUBLISH <path>` → `OK hash=<hex> bytes=<n> chunks=<c> sent=<s> reused=<r> manifests=<m> unacked=<u>`.
pub async fn publish<W: AsyncWriteExt + Unpin>(
    node: &NodeHandle,
    path: &str,
    max_len: u64,
    out: &mut W,
) -> std::io::Result<Result<String, String>> {
    if path.is_empty() {
        return Ok(Err("PUBLISH needs a path".into()));
    }
    let options = PublishOptions { max_len, ..PublishOptions::default() };
    with_progress(out, |progress| async move {
        let p = fs::publish_path(node.clone(), Path::new(path), options, progress)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        Ok(format!(
            "OK hash={:#} bytes={} chunks={} sent={} reused={} manifests={} unacked={}",
            p.hash, p.len, p.chunks, p.sent, p.reused, p.manifests, p.unacked
        ))
    })
    .await
}

/// `FETCH <hash> <path>` → `OK bytes=<n> resumed=<r> path=<path>`.
pub async fn fetch<W: AsyncWriteExt + Unpin>(
    node: &NodeHandle,
    rest: &str,
    max_len: u64,
    out: &mut W,
) -> std::io::Result<Result<String, String>> {
    let Some((hash, path)) = rest.split_once(' ').filter(|(_, p)| !p.is_empty()) else {
        return Ok(Err("FETCH needs a hash and a path".into()));
    };
    let Ok(root) = hash.parse::<Key>() else {
        return Ok(Err(format!("{hash:?} is not a hash (64 hex digits)")));
    };
    let options = FetchOptions { max_len, ..FetchOptions::default() };
    with_progress(out, |progress| async move {
        let f =
            fs::fetch_path(node.clone(), root, Path::new(path), options, progress).await.map_err(|e| e.to_string())?;
        Ok(format!("OK bytes={} resumed={} path={path}", f.len, f.resumed))
    })
    .await
}

/// Runs `work`, writing the progress it reports to `out` every [`PROGRESS_EVERY`].
async fn with_progress<'a, W, F, Fut>(out: &mut W, work: F) -> std::io::Result<Result<String, String>>
where
    W: AsyncWriteExt + Unpin,
    F: FnOnce(Box<dyn FnMut(u64, u64) + 'a>) -> Fut,
    Fut: Future<Output = Result<String, String>> + 'a,
{
    let latest = Rc::new(Cell::new(None));
    let report = Rc::clone(&latest);
    let work = work(Box::new(move |done, total| report.set(Some((done, total)))));
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            result = &mut work => return Ok(result),
            _ = tick.tick() => if let Some((done, total)) = latest.take() {
                out.write_all(format!("PROGRESS {done} {total}\n").as_bytes()).await?;
            },
        }
    }
}

/// The client's side: a progress bar on stderr fed by `PROGRESS` lines; `None` when `line` is not one.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// No bar until the first `PROGRESS` line.
    pub fn new() -> Self {
        Bar(None)
    }

    /// Takes a `PROGRESS <done> <total>` line (true), or leaves any other line alone (false).
    pub fn update(&mut self, line: &str) -> bool {
        let Some(rest) = line.strip_prefix("PROGRESS ") else { return false };
        let mut numbers = rest.split(' ').map(|n| n.parse::<u64>().ok());
        let (Some(Some(done)), Some(Some(total))) = (numbers.next(), numbers.next()) else { return true };
        let bar = self.0.get_or_insert_with(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}");
            bar.set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()));
            bar
        });
        bar.set_length(total);
        bar.set_position(done);
        true
    }

    /// Ends the bar (if any) before the answer is printed.
    pub fn finish(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}
