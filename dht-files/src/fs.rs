//! Files on disk: publish a path, fetch into a path (resuming a partial download).

use crate::Fetch;
use crate::{Blocks, FetchOptions, FileError, PublishOptions, Published, Publisher};
use dht_core::Key;
use futures::StreamExt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes read from the source at a time.
const READ_LEN: usize = 1 << 20;

/// Publishes the file at `path`; `progress(stored, total)` is called after each piece read.
pub async fn publish_path<B: Blocks + Clone + 'static>(
    blocks: B,
    path: &Path,
    options: PublishOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<Published, FileError> {
    let mut file = File::open(path)?;
    let total = file.metadata()?.len();
    if total > options.max_len {
        return Err(FileError::TooLarge { max: options.max_len });
    }
    let mut publisher = Publisher::new(blocks, options);
    let mut buf = vec![0; READ_LEN];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        publisher.write(&buf[..n]).await?;
        progress(publisher.progress().stored, total);
    }
    let published = publisher.finish().await?;
    progress(published.len, published.len);
    Ok(published)
}

/// What a fetch to disk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// The file's length.
    pub len: u64,
    /// Bytes found already fetched in the partial file (not fetched again).
    pub resumed: u64,
}

/// The partial file a fetch into `out` writes: `out` with `.part` appended.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Fetches the file named `root` into `out`: written to [`partial_path`] first, whose chunks already
/// there and good are kept (a fetch stopped half-way goes on where it stopped), synced, then renamed to
/// `out`. `progress(done, total)` is called after each chunk.
pub async fn fetch_path<B: Blocks + Clone + 'static>(
    blocks: B,
    root: Key,
    out: &Path,
    options: FetchOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<Fetched, FileError> {
    let fetch = Fetch::open(blocks, root, options).await?;
    let part = partial_path(out);
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&part)?;
    let (first, resumed) = good_prefix(&mut file, &fetch)?;
    file.set_len(resumed)?;
    file.seek(SeekFrom::Start(resumed))?;
    let (mut done, total) = (resumed, fetch.len());
    progress(done, total);
    let mut chunks = std::pin::pin!(fetch.into_stream(first));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        file.write_all(&chunk)?;
        done += chunk.len() as u64;
        progress(done, total);
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&part, out)?;
    Ok(Fetched { len: total, resumed })
}

/// How many of the file's chunks the partial file already holds, in order and intact, and their bytes.
fn good_prefix<B>(file: &mut File, fetch: &Fetch<B>) -> Result<(usize, u64), FileError>
where
    B: Blocks,
{
    let have = file.metadata()?.len();
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for (i, entry) in fetch.chunks().iter().enumerate() {
        if offset + entry.len > have {
            return Ok((i, offset));
        }
        buf.resize(entry.len as usize, 0);
        file.read_exact(&mut buf)?;
        if Key::from_name(&buf) != entry.key() {
            return Ok((i, offset));
        }
        offset += entry.len;
    }
    Ok((fetch.chunks().len(), offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::memory::MapBlocks;
    use crate::chunker::tests::random_bytes;
    use futures::executor::block_on;

    #[test]
    fn a_path_round_trips_and_a_partial_fetch_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, out) = (dir.path().join("src"), dir.path().join("out"));
        let data = random_bytes(700_000, 12);
        std::fs::write(&src, &data).unwrap();
        let blocks = MapBlocks::default();
        let mut calls = 0;
        let published =
            block_on(publish_path(blocks.clone(), &src, PublishOptions::default(), |_, _| calls += 1)).unwrap();
        assert!(calls >= 2);
        let reader = MapBlocks { swarm: blocks.swarm.clone(), ..MapBlocks::default() };

        // A download stopped after 300,000 bytes, with its last bytes damaged.
        let mut partial = data[..300_000].to_vec();
        *partial.last_mut().unwrap() ^= 1;
        std::fs::write(partial_path(&out), &partial).unwrap();
        let fetched =
            block_on(fetch_path(reader.clone(), published.hash, &out, FetchOptions::default(), |_, _| {})).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
        assert!(!partial_path(&out).exists());
        assert!(fetched.resumed > 0 && fetched.resumed < 300_000, "{fetched:?}");
        let chunks_total =
            block_on(Fetch::open(reader.clone(), published.hash, FetchOptions::default())).unwrap().chunks().len();
        assert!(reader.gets.get() < chunks_total + 2, "resumed chunks were not fetched again");
    }

    #[test]
    fn a_missing_source_is_an_error() {
        let err = block_on(publish_path(
            MapBlocks::default(),
            Path::new("/nonexistent/x"),
            PublishOptions::default(),
            |_, _| {},
        ));
        assert!(matches!(err, Err(FileError::Io(_))));
    }
}
