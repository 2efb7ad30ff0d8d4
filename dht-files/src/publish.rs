//! Storing a file: chunks, then the manifests above them, a bounded number of puts in flight.

use crate::{Block, Blocks, Chunker, Entry, FileError, PutReport, TreeBuilder, DEFAULT_MAX_FILE_LEN, MAX_CHUNK};
use dht_core::Key;
use futures::future::{FutureExt, LocalBoxFuture};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::HashSet;

/// How a file is published.
#[derive(Debug, Clone, Copy)]
pub struct PublishOptions {
    /// Puts in flight at once.
    pub parallel: usize,
    /// Largest file accepted, in bytes.
    pub max_len: u64,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions { parallel: 64, max_len: DEFAULT_MAX_FILE_LEN }
    }
}

/// A published file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The root manifest's hash: the file's name.
    pub hash: Key,
    /// Its length in bytes.
    pub len: u64,
    /// Chunks in it.
    pub chunks: usize,
    /// Chunks put (sent to the swarm) by this publish.
    pub sent: usize,
    /// Chunks not sent: this node had put them already (an earlier version of the file, or an earlier
    /// place in this one).
    pub reused: usize,
    /// Manifests in its tree (each put unless this node had put it already).
    pub manifests: usize,
    /// Blocks that no peer acknowledged (they are held here only, and go out at the next republish).
    pub unacked: usize,
}

/// Bytes so far of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishProgress {
    /// Bytes cut into chunks.
    pub chunked: u64,
    /// Bytes of chunks stored (put and acknowledged, or already held).
    pub stored: u64,
}

type Put = LocalBoxFuture<'static, (u64, Result<PutReport, FileError>)>;

/// Publishes one file: feed its bytes with [`Publisher::write`] (any split), or chunks already cut and
/// hashed (in a Web Worker) with [`Publisher::add_chunk`], then [`Publisher::finish`].
pub struct Publisher<B> {
    blocks: B,
    options: PublishOptions,
    chunker: Chunker,
    tree: TreeBuilder,
    in_flight: FuturesUnordered<Put>,
    /// Blocks already put or found put in this publish.
    seen: HashSet<Key>,
    progress: PublishProgress,
    /// Chunks put by this publish, and chunks not sent (put before): every chunk is one or the other.
    sent: usize,
    reused: usize,
    manifests: usize,
    unacked: usize,
}

impl<B: Blocks + Clone + 'static> Publisher<B> {
    /// A publish through `blocks`.
    pub fn new(blocks: B, options: PublishOptions) -> Self {
        Publisher {
            blocks,
            options: PublishOptions { parallel: options.parallel.max(1), ..options },
            chunker: Chunker::new(),
            tree: TreeBuilder::new(),
            in_flight: FuturesUnordered::new(),
            seen: HashSet::new(),
            progress: PublishProgress::default(),
            sent: 0,
            reused: 0,
            manifests: 0,
            unacked: 0,
        }
    }

    /// Bytes chunked and stored so far.
    pub fn progress(&self) -> PublishProgress {
        self.progress
    }

    /// Feeds the file's next bytes; waits while `parallel` puts are in flight.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), FileError> {
        let fed = self.progress.chunked + self.chunker.buffered() as u64 + bytes.len() as u64;
        if fed > self.options.max_len {
            return Err(FileError::TooLarge { max: self.options.max_len });
        }
        let mut chunks = Vec::new();
        self.chunker.push(bytes, &mut chunks);
        for chunk in chunks {
            self.add_chunk(Key::from_name(&chunk), chunk).await?;
        }
        Ok(())
    }

    /// Adds the file's next chunk, cut and hashed elsewhere (`key` must be its SHA-256: the holders check
    /// it). Do not mix with [`Publisher::write`] in one file.
    pub async fn add_chunk(&mut self, key: Key, chunk: Vec<u8>) -> Result<(), FileError> {
        if chunk.is_empty() || chunk.len() > MAX_CHUNK {
            return Err(FileError::BadChunk(chunk.len()));
        }
        let len = chunk.len() as u64;
        if self.progress.chunked + len > self.options.max_len {
            return Err(FileError::TooLarge { max: self.options.max_len });
        }
        self.progress.chunked += len;
        let mut closed = Vec::new();
        self.tree.push_chunk(Entry { hash: *key.as_bytes(), len }, &mut closed);
        if self.store(key, chunk, len).await? {
            self.sent += 1;
        } else {
            self.reused += 1;
        }
        self.store_manifests(closed).await
    }

    /// Stores the last chunks and the manifests, and waits for every put.
    pub async fn finish(mut self) -> Result<Published, FileError> {
        let mut chunks = Vec::new();
        std::mem::take(&mut self.chunker).finish(&mut chunks);
        for chunk in chunks {
            self.add_chunk(Key::from_name(&chunk), chunk).await?;
        }
        let mut closed = Vec::new();
        let root = std::mem::take(&mut self.tree).finish(&mut closed);
        self.store_manifests(closed).await?;
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        Ok(Published {
            hash: root.key(),
            len: root.len,
            chunks: self.sent + self.reused,
            sent: self.sent,
            reused: self.reused,
            manifests: self.manifests,
            unacked: self.unacked,
        })
    }

    async fn store_manifests(&mut self, closed: Vec<Block>) -> Result<(), FileError> {
        for block in closed {
            self.manifests += 1;
            self.store(block.key, block.value, 0).await?;
        }
        Ok(())
    }

    /// Puts a block unless this publish or an earlier one did; `counted` bytes go to the progress when it
    /// is stored. Returns whether it was sent.
    async fn store(&mut self, key: Key, value: Vec<u8>, counted: u64) -> Result<bool, FileError> {
        if !self.seen.insert(key) || self.blocks.is_published(key).await? {
            self.progress.stored += counted;
            return Ok(false);
        }
        while self.in_flight.len() >= self.options.parallel {
            self.settle_one().await?;
        }
        let blocks = self.blocks.clone();
        self.in_flight.push(Box::pin(async move { (counted, blocks.put(key, value).await) }));
        // Poll the new put once now, so that it goes out at once: otherwise it would wait for the next
        // call to poll the set (the next chunk, which may be a worker's round trip away), and take the
        // puts that finished meanwhile.
        while let Some(Some(done)) = self.in_flight.next().now_or_never() {
            self.settled(done)?;
        }
        Ok(true)
    }

    async fn settle_one(&mut self) -> Result<(), FileError> {
        match self.in_flight.next().await {
            Some(done) => self.settled(done),
            None => Ok(()),
        }
    }

    fn settled(&mut self, (counted, result): (u64, Result<PutReport, FileError>)) -> Result<(), FileError> {
        let report = result?;
        if report.acks == 0 {
            self.unacked += 1;
        }
        self.progress.stored += counted;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::memory::MapBlocks;
    use crate::chunker::tests::random_bytes;
    use futures::executor::block_on;

    fn publish(blocks: &MapBlocks, data: &[u8], piece: usize) -> Published {
        block_on(async {
            let mut p = Publisher::new(blocks.clone(), PublishOptions::default());
            for part in data.chunks(piece.max(1)) {
                p.write(part).await.unwrap();
            }
            let done = p.finish().await.unwrap();
            done
        })
    }

    #[test]
    fn a_file_is_named_by_its_content_whatever_the_split() {
        let data = random_bytes(600_000, 3);
        let (a, b) = (MapBlocks::default(), MapBlocks::default());
        let one = publish(&a, &data, data.len());
        let other = publish(&b, &data, 1000);
        assert_eq!(one, other);
        assert_eq!(one.len, data.len() as u64);
        assert_eq!((one.sent, one.reused, one.manifests, one.unacked), (one.chunks, 0, 1, 0));
        assert_eq!(a.puts.get(), one.chunks + 1);
    }

    #[test]
    fn a_one_byte_insert_sends_the_chunks_around_it_and_the_manifest() {
        let blocks = MapBlocks::default();
        let data = random_bytes(4 << 20, 4);
        let first = publish(&blocks, &data, 1 << 20);
        let mut edited = data.clone();
        edited.insert(data.len() / 2, 7);
        let puts = blocks.puts.get();
        let second = publish(&blocks, &edited, 1 << 20);
        assert_ne!(first.hash, second.hash);
        assert!((1..=3).contains(&second.sent), "{} chunks sent again", second.sent);
        assert_eq!(second.reused, second.chunks - second.sent);
        assert_eq!(blocks.puts.get() - puts, second.sent + 1, "the chunks and one manifest");
        let again = publish(&blocks, &edited, 4096);
        assert_eq!((again.hash, again.sent), (second.hash, 0));
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let blocks = MapBlocks::default();
        let options = PublishOptions { parallel: 4, max_len: 100_000 };
        let result = block_on(async {
            let mut p = Publisher::new(blocks.clone(), options);
            p.write(&random_bytes(60_000, 5)).await?;
            p.write(&random_bytes(60_000, 6)).await?;
            p.finish().await
        });
        assert!(matches!(result, Err(FileError::TooLarge { max: 100_000 })), "{result:?}");
    }

    #[test]
    fn repeated_chunks_are_put_once() {
        let blocks = MapBlocks::default();
        let block = random_bytes(MAX_CHUNK, 8);
        let data: Vec<u8> = std::iter::repeat_n(block.as_slice(), 8).flatten().copied().collect();
        let done = publish(&blocks, &data, data.len());
        assert!(done.reused > 0 && done.sent < done.chunks, "{done:?}");
        assert_eq!(blocks.puts.get(), done.sent + 1);
    }
}
