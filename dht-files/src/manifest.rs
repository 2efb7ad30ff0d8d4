//! Manifests: the records that name a file. A leaf lists the file's chunks, a branch lists manifests; each
//! entry is a hash and the bytes of the file under it, so a reader knows every chunk's place before it
//! fetches any.

use crate::FileError;
use bincode::{Decode, Encode};
use dht_core::Key;

/// Bytes that open every manifest, so a chunk is never taken for one.
const MAGIC: &[u8; 8] = b"webdhtF1";
/// Entries per manifest: 1,024 × 40 bytes fits a 64 KiB record with room to spare, and two levels name
/// 2^20 chunks (16 GiB at the average chunk size).
pub const FANOUT: usize = 1024;
/// Levels of manifests a reader follows (the root is level 1).
pub const MAX_DEPTH: usize = 4;
/// Largest encoded manifest.
const MAX_MANIFEST_LEN: usize = MAGIC.len() + 4 + 8 + FANOUT * 40;

/// One entry of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Entry {
    /// SHA-256 of the chunk or manifest: its record key.
    pub hash: [u8; 32],
    /// Bytes of the file under it.
    pub len: u64,
}

impl Entry {
    /// The record key of what the entry names.
    pub fn key(&self) -> Key {
        Key::from_bytes(self.hash)
    }
}

/// A manifest record's content.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Manifest {
    /// The file's chunks, in order.
    Chunks(Vec<Entry>),
    /// Manifests of consecutive parts of the file, in order.
    Manifests(Vec<Entry>),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_fixed_int_encoding().with_limit::<MAX_MANIFEST_LEN>()
}

impl Manifest {
    /// Its entries.
    pub fn entries(&self) -> &[Entry] {
        match self {
            Manifest::Chunks(e) | Manifest::Manifests(e) => e,
        }
    }

    /// Bytes of the file under it.
    pub fn len(&self) -> u64 {
        self.entries().iter().map(|e| e.len).sum()
    }

    /// Whether it names no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record value.
    pub fn encode(&self) -> Vec<u8> {
        let body = bincode::encode_to_vec(self, config()).expect("a manifest of at most FANOUT entries encodes");
        [MAGIC.as_slice(), &body].concat()
    }

    /// Reads a record value: the magic bytes, then at most [`FANOUT`] entries, a chunk at most `max_chunk`
    /// bytes long and none empty, nothing after them.
    pub fn decode(bytes: &[u8], max_chunk: usize) -> Result<Self, FileError> {
        let body = bytes.strip_prefix(MAGIC).ok_or(FileError::NotAManifest)?;
        let (manifest, used): (Manifest, usize) =
            bincode::decode_from_slice(body, config()).map_err(|e| FileError::BadManifest(e.to_string()))?;
        if used != body.len() {
            return Err(FileError::BadManifest(format!("{} bytes after the entries", body.len() - used)));
        }
        let entries = manifest.entries();
        if entries.len() > FANOUT {
            return Err(FileError::BadManifest(format!("{} entries, above {FANOUT}", entries.len())));
        }
        if entries.iter().any(|e| e.len == 0) {
            return Err(FileError::BadManifest("an entry of no bytes".into()));
        }
        if matches!(manifest, Manifest::Chunks(_)) && entries.iter().any(|e| e.len > max_chunk as u64) {
            return Err(FileError::BadManifest(format!("a chunk above {max_chunk} bytes")));
        }
        if entries.iter().try_fold(0u64, |sum, e| sum.checked_add(e.len)).is_none() {
            return Err(FileError::BadManifest("lengths overflow".into()));
        }
        Ok(manifest)
    }
}

/// A manifest record ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Its key (SHA-256 of `value`).
    pub key: Key,
    /// Its value.
    pub value: Vec<u8>,
}

/// Builds the manifest tree bottom-up as chunks arrive: a level that fills is closed into a manifest whose
/// entry goes one level up, so memory stays at one partial manifest per level.
#[derive(Debug)]
pub struct TreeBuilder {
    levels: Vec<Vec<Entry>>,
    fanout: usize,
}

impl Default for TreeBuilder {
    fn default() -> Self {
        Self::with_fanout(FANOUT)
    }
}

impl TreeBuilder {
    /// A tree of [`FANOUT`] entries per manifest.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn with_fanout(fanout: usize) -> Self {
        assert!((2..=FANOUT).contains(&fanout), "a manifest holds 2 to FANOUT entries");
        TreeBuilder { levels: vec![Vec::new()], fanout }
    }

    /// Adds the file's next chunk; the manifests it closes go to `out` (to be stored).
    pub fn push_chunk(&mut self, chunk: Entry, out: &mut Vec<Block>) {
        self.levels[0].push(chunk);
        let mut i = 0;
        while self.levels[i].len() == self.fanout {
            let entry = close(i, std::mem::take(&mut self.levels[i]), out);
            if i + 1 == self.levels.len() {
                self.levels.push(Vec::new());
            }
            self.levels[i + 1].push(entry);
            i += 1;
        }
    }

    /// Closes every level; the manifests that closes go to `out`, the last being the root, whose entry
    /// (its hash and the file's length) is returned.
    pub fn finish(mut self, out: &mut Vec<Block>) -> Entry {
        let mut i = 0;
        loop {
            let entries = std::mem::take(&mut self.levels[i]);
            if i + 1 == self.levels.len() {
                return match entries.as_slice() {
                    [only] if i > 0 => *only,
                    _ => close(i, entries, out),
                };
            }
            if !entries.is_empty() {
                let entry = close(i, entries, out);
                self.levels[i + 1].push(entry);
            }
            i += 1;
        }
    }
}

fn close(level: usize, entries: Vec<Entry>, out: &mut Vec<Block>) -> Entry {
    let manifest = if level == 0 { Manifest::Chunks(entries) } else { Manifest::Manifests(entries) };
    let len = manifest.len();
    let value = manifest.encode();
    let key = Key::from_name(&value);
    out.push(Block { key, value });
    Entry { hash: *key.as_bytes(), len }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> Entry {
        Entry { hash: *Key::from_name(&i.to_be_bytes()).as_bytes(), len: 1 + i % 7 }
    }

    #[test]
    fn a_full_manifest_fits_a_record() {
        let m = Manifest::Manifests((0..FANOUT as u64).map(entry).collect());
        let bytes = m.encode();
        assert!(bytes.len() <= MAX_MANIFEST_LEN && bytes.len() <= 64 * 1024, "{} bytes", bytes.len());
        assert_eq!(Manifest::decode(&bytes, 65536).unwrap(), m);
    }

    #[test]
    fn bad_manifests_are_refused() {
        let good = Manifest::Chunks(vec![entry(1), entry(2)]).encode();
        assert!(matches!(Manifest::decode(&good[1..], 65536), Err(FileError::NotAManifest)));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(Manifest::decode(&long, 65536), Err(FileError::BadManifest(_))));
        assert!(matches!(Manifest::decode(&good[..good.len() - 1], 65536), Err(FileError::BadManifest(_))));
        let empty_entry = Manifest::Chunks(vec![Entry { hash: [0; 32], len: 0 }]).encode();
        assert!(matches!(Manifest::decode(&empty_entry, 65536), Err(FileError::BadManifest(_))));
        let big_chunk = Manifest::Chunks(vec![Entry { hash: [0; 32], len: 70_000 }]).encode();
        assert!(matches!(Manifest::decode(&big_chunk, 65536), Err(FileError::BadManifest(_))));
        let overflow = Manifest::Manifests(vec![Entry { hash: [0; 32], len: u64::MAX }; 2]).encode();
        assert!(matches!(Manifest::decode(&overflow, 65536), Err(FileError::BadManifest(_))));
        let mut too_many = MAGIC.to_vec();
        too_many.extend_from_slice(&[0, 0, 0, 0]); // variant 0, then a length far above FANOUT
        too_many.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(Manifest::decode(&too_many, 65536), Err(FileError::BadManifest(_))));
    }

    fn build(n: u64, fanout: usize) -> (Entry, Vec<Block>) {
        let mut tree = TreeBuilder::with_fanout(fanout);
        let mut out = Vec::new();
        for i in 0..n {
            tree.push_chunk(entry(i), &mut out);
        }
        let root = tree.finish(&mut out);
        (root, out)
    }

    /// The chunks under `root`, reading the blocks the builder gave out.
    fn leaves(root: Entry, blocks: &[Block]) -> Vec<Entry> {
        let block = blocks.iter().find(|b| b.key == root.key()).expect("every manifest named is given out");
        match Manifest::decode(&block.value, 65536).unwrap() {
            Manifest::Chunks(e) => e,
            Manifest::Manifests(e) => e.into_iter().flat_map(|m| leaves(m, blocks)).collect(),
        }
    }

    #[test]
    fn trees_name_every_chunk_in_order() {
        for (n, fanout, manifests) in
            [(0, 4, 1), (1, 4, 1), (4, 4, 1), (5, 4, 3), (16, 4, 5), (17, 4, 8), (100, 1024, 1)]
        {
            let (root, blocks) = build(n, fanout);
            assert_eq!(blocks.len(), manifests, "{n} chunks, fanout {fanout}");
            assert_eq!(blocks.last().unwrap().key, root.key(), "the root comes last");
            let expect: Vec<Entry> = (0..n).map(entry).collect();
            assert_eq!(leaves(root, &blocks), expect);
            assert_eq!(root.len, expect.iter().map(|e| e.len).sum::<u64>());
        }
    }
}
