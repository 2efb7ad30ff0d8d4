//! Reading a file: its manifests first (so every chunk's place and length are known), then its chunks
//! in order, a bounded number of gets in flight, each checked against its hash.

use crate::{Blocks, Entry, FileError, Manifest, DEFAULT_MAX_FILE_LEN, MAX_CHUNK, MAX_DEPTH, MIN_CHUNK};
use dht_core::Key;
use futures::stream::{self, Stream, StreamExt};

/// How a file is fetched.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// Gets in flight at once (so at most this many chunks, 64 KiB each at most, wait in memory).
    pub parallel: usize,
    /// Largest file accepted, in bytes.
    pub max_len: u64,
    /// Gets of a block after the first that found nothing (a lookup can miss under loss or churn).
    pub retries: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { parallel: 16, max_len: DEFAULT_MAX_FILE_LEN, retries: 2 }
    }
}

/// A file whose manifests are read: its chunks can be streamed.
#[derive(Debug)]
pub struct Fetch<B> {
    blocks: B,
    options: FetchOptions,
    chunks: Vec<Entry>,
    len: u64,
}

impl<B: Blocks> Fetch<B> {
    /// Reads the manifest tree under `root`, level by level: each manifest checked against its hash and
    /// against the length its parent gives it, at most [`MAX_DEPTH`] levels, one kind per level, the file no
    /// longer than `max_len` and with no more chunks than that length allows.
    pub async fn open(blocks: B, root: Key, options: FetchOptions) -> Result<Self, FileError> {
        let root_manifest = manifest(&blocks, root, options.retries).await?;
        let len = root_manifest.len();
        if len > options.max_len {
            return Err(FileError::TooLarge { max: options.max_len });
        }
        // Every chunk but the last is at least MIN_CHUNK long, so a file of `len` bytes has at most this many.
        let max_entries = (len / MIN_CHUNK as u64 + 1) as usize;
        let mut level = root_manifest;
        for depth in 1.. {
            let entries = match level {
                Manifest::Chunks(entries) => return Ok(Fetch { blocks, options, chunks: entries, len }),
                Manifest::Manifests(entries) => entries,
            };
            if depth == MAX_DEPTH {
                return Err(FileError::BadManifest(format!("deeper than {MAX_DEPTH} levels")));
            }
            level = next_level(&blocks, &entries, max_entries, options.retries).await?;
        }
        unreachable!("the loop returns by MAX_DEPTH")
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its chunks, in order.
    pub fn chunks(&self) -> &[Entry] {
        &self.chunks
    }
}

impl<B: Blocks + Clone + 'static> Fetch<B> {
    /// The chunks from index `first` on, in order, each checked (taken from this node's store when it
    /// holds it, else from the swarm), `parallel` gets in flight.
    pub fn into_stream(self, first: usize) -> impl Stream<Item = Result<Vec<u8>, FileError>> + 'static {
        let (blocks, retries) = (self.blocks, self.options.retries);
        let entries: Vec<Entry> = self.chunks.get(first..).unwrap_or_default().to_vec();
        stream::iter(entries)
            .map(move |e| {
                let blocks = blocks.clone();
                async move { block(&blocks, e.key(), Some(e.len), "chunk", retries).await }
            })
            .buffered(self.options.parallel.max(1))
    }
}

/// The manifests named by `entries`, merged into one level (their entries in order), each checked to
/// cover the length its entry gives; all of one kind, and at most `max_entries` entries in all.
async fn next_level<B: Blocks>(
    blocks: &B,
    entries: &[Entry],
    max_entries: usize,
    retries: usize,
) -> Result<Manifest, FileError> {
    let (mut chunks, mut manifests) = (Vec::new(), Vec::new());
    for e in entries {
        let m = manifest(blocks, e.key(), retries).await?;
        if m.len() != e.len {
            return Err(FileError::BadManifest(format!(
                "manifest {:#} covers {} bytes, not {}",
                e.key(),
                m.len(),
                e.len
            )));
        }
        match m {
            Manifest::Chunks(es) => chunks.extend(es),
            Manifest::Manifests(es) => manifests.extend(es),
        }
        if chunks.len() + manifests.len() > max_entries {
            return Err(FileError::BadManifest(format!("more than {max_entries} entries for the file's length")));
        }
    }
    match (chunks.is_empty(), manifests.is_empty()) {
        (_, true) => Ok(Manifest::Chunks(chunks)),
        (true, false) => Ok(Manifest::Manifests(manifests)),
        (false, false) => Err(FileError::BadManifest("chunks and manifests on one level".into())),
    }
}

async fn manifest<B: Blocks>(blocks: &B, key: Key, retries: usize) -> Result<Manifest, FileError> {
    let bytes = block(blocks, key, None, "manifest", retries).await?;
    Manifest::decode(&bytes, MAX_CHUNK)
}

/// The block under `key`, checked against it (and against `len` when given): from this node's store when
/// it holds a good copy, else from the swarm, asking up to `retries` more times when nothing good came.
async fn block<B: Blocks>(
    blocks: &B,
    key: Key,
    len: Option<u64>,
    what: &'static str,
    retries: usize,
) -> Result<Vec<u8>, FileError> {
    let good = |v: &Vec<u8>| Key::from_name(v) == key && len.is_none_or(|l| v.len() as u64 == l);
    if let Some(v) = blocks.get_local(key).await?.filter(good) {
        return Ok(v);
    }
    let mut corrupt = false;
    for _ in 0..=retries {
        match blocks.get(key).await? {
            Some(v) if good(&v) => return Ok(v),
            Some(_) => corrupt = true,
            None => {}
        }
    }
    Err(if corrupt { FileError::Corrupt { what, key } } else { FileError::Missing { what, key } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::memory::MapBlocks;
    use crate::chunker::tests::random_bytes;
    use crate::{PublishOptions, Publisher, TreeBuilder};
    use futures::executor::block_on;
    use futures::TryStreamExt;

    fn publish(blocks: &MapBlocks, data: &[u8]) -> Key {
        block_on(async {
            let mut p = Publisher::new(blocks.clone(), PublishOptions::default());
            p.write(data).await.unwrap();
            p.finish().await.unwrap().hash
        })
    }

    fn fetch_all(blocks: MapBlocks, root: Key, options: FetchOptions) -> Result<Vec<u8>, FileError> {
        block_on(async {
            let f = Fetch::open(blocks, root, options).await?;
            let chunks: Vec<Vec<u8>> = f.into_stream(0).try_collect().await?;
            Ok(chunks.concat())
        })
    }

    /// A node that holds nothing itself, in the same swarm.
    fn elsewhere(blocks: &MapBlocks) -> MapBlocks {
        MapBlocks { swarm: blocks.swarm.clone(), ..MapBlocks::default() }
    }

    #[test]
    fn a_published_file_comes_back_whole() {
        let blocks = MapBlocks::default();
        for len in [0, 1, 5000, 300_000] {
            let data = random_bytes(len, len as u64);
            let root = publish(&blocks, &data);
            assert_eq!(fetch_all(elsewhere(&blocks), root, FetchOptions::default()).unwrap(), data);
        }
    }

    #[test]
    fn a_stream_from_a_later_chunk_gives_the_rest() {
        let blocks = MapBlocks::default();
        let data = random_bytes(250_000, 13);
        let root = publish(&blocks, &data);
        let got: Vec<Vec<u8>> = block_on(async {
            let f = Fetch::open(elsewhere(&blocks), root, FetchOptions::default()).await.unwrap();
            let first = f.chunks()[0].len as usize;
            let rest: Vec<Vec<u8>> = f.into_stream(1).try_collect().await.unwrap();
            assert_eq!(rest.concat(), data[first..]);
            rest
        });
        assert!(!got.is_empty());
    }

    #[test]
    fn local_chunks_are_not_fetched_again() {
        let blocks = MapBlocks::default();
        let data = random_bytes(200_000, 9);
        let root = publish(&blocks, &data);
        assert_eq!(fetch_all(blocks.clone(), root, FetchOptions::default()).unwrap(), data);
        assert_eq!(blocks.gets.get(), 0, "everything was local");
    }

    /// A tree of several levels (fanout 2), stored by hand.
    #[test]
    fn deep_trees_are_read_and_too_deep_ones_refused() {
        let (mut read, mut refused) = (0, 0);
        for len in [100_000, 1_000_000] {
            let data = random_bytes(len, 10);
            if deep_tree(&data) {
                read += 1;
            } else {
                refused += 1;
            }
        }
        assert_eq!((read, refused), (1, 1), "one tree within MAX_DEPTH, one beyond");
    }

    /// Stores `data` under a fanout-2 tree; whether it was read back (else refused as too deep).
    fn deep_tree(data: &[u8]) -> bool {
        let blocks = MapBlocks::default();
        let mut chunks = Vec::new();
        let mut chunker = crate::Chunker::new();
        chunker.push(data, &mut chunks);
        chunker.finish(&mut chunks);
        let mut tree = TreeBuilder::with_fanout(2);
        let mut manifests = Vec::new();
        for c in &chunks {
            let key = Key::from_name(c);
            blocks.swarm.borrow_mut().insert(key, c.clone());
            tree.push_chunk(Entry { hash: *key.as_bytes(), len: c.len() as u64 }, &mut manifests);
        }
        let root = tree.finish(&mut manifests);
        for m in manifests {
            blocks.swarm.borrow_mut().insert(m.key, m.value);
        }
        let depth = (chunks.len() as f64).log2().ceil() as usize;
        let result = fetch_all(blocks.clone(), root.key(), FetchOptions::default());
        if depth <= MAX_DEPTH {
            assert_eq!(result.unwrap(), data);
            true
        } else {
            assert!(matches!(result, Err(FileError::BadManifest(_))), "{result:?}");
            false
        }
    }

    #[test]
    fn hostile_manifests_and_chunks_are_refused() {
        let blocks = MapBlocks::default();
        let put = |value: Vec<u8>| {
            let key = Key::from_name(&value);
            blocks.swarm.borrow_mut().insert(key, value);
            key
        };
        let chunk = put(random_bytes(5000, 11));
        let entry = |key: Key, len| Entry { hash: *key.as_bytes(), len };
        let fetch = |root| fetch_all(blocks.clone(), root, FetchOptions { retries: 0, ..Default::default() });

        // A chunk whose length is not the one its manifest gives.
        let wrong_len = put(Manifest::Chunks(vec![entry(chunk, 4999)]).encode());
        assert!(matches!(fetch(wrong_len), Err(FileError::Corrupt { what: "chunk", .. })));
        // A chunk nobody holds.
        let missing = put(Manifest::Chunks(vec![entry(Key::from_name(b"none"), 10)]).encode());
        assert!(matches!(fetch(missing), Err(FileError::Missing { what: "chunk", .. })));
        // A branch that says its child covers more than it does.
        let leaf = put(Manifest::Chunks(vec![entry(chunk, 5000)]).encode());
        let lying = put(Manifest::Manifests(vec![entry(leaf, 6000)]).encode());
        assert!(matches!(fetch(lying), Err(FileError::BadManifest(_))));
        // A chunk named as the file.
        assert!(matches!(fetch(chunk), Err(FileError::NotAManifest)));
        // Too large for the limit.
        let big = put(Manifest::Chunks(vec![entry(chunk, 5000)]).encode());
        let small = FetchOptions { max_len: 4000, ..Default::default() };
        assert!(matches!(fetch_all(blocks.clone(), big, small), Err(FileError::TooLarge { max: 4000 })));
        // Many tiny chunks: more entries than the length allows.
        let tiny = put(vec![1]);
        let spray = put(Manifest::Chunks(vec![entry(tiny, 1); 3]).encode());
        let branch = put(Manifest::Manifests(vec![entry(spray, 3)]).encode());
        assert!(matches!(fetch(branch), Err(FileError::BadManifest(_))));
        // A level that mixes chunks and manifests.
        let mixed = put(Manifest::Manifests(vec![entry(leaf, 5000), entry(lying, 6000)]).encode());
        assert!(matches!(fetch(mixed), Err(FileError::BadManifest(_))));
        // A corrupt copy held locally is passed over for a good one in the swarm.
        let local_bad = elsewhere(&blocks);
        local_bad.local.borrow_mut().insert(chunk, vec![0; 5000]);
        assert!(fetch_all(local_bad, leaf, FetchOptions::default()).is_ok());
    }
}
