//! Files in the webdht swarm.
//!
//! A file is cut into content-defined chunks ([`Chunker`]: FastCDC, 16 KiB on average), each stored as an
//! immutable record (its key is its SHA-256), and named by a manifest (a tree of them for large files,
//! [`Manifest`]) that is itself an immutable record: the root manifest's hash names the file.
//! [`Publisher`] stores a file with a bounded number of puts in flight and skips the chunks this node has
//! already put (an edit re-sends only the chunks around it); [`Fetch`] reads the manifests, then gives the
//! chunks in order, each checked against its hash, with a bounded number of gets in flight. Both work over
//! any [`Blocks`] (a running node's [`dht_driver::NodeHandle`], or a map in tests).
#![warn(missing_docs)]

mod blocks;
mod chunker;
mod fetch;
mod manifest;
mod publish;

#[cfg(not(target_arch = "wasm32"))]
pub mod fs;

pub use blocks::{Blocks, PutReport};
pub use chunker::{Chunker, AVG_CHUNK, MAX_CHUNK, MIN_CHUNK};
pub use fetch::{Fetch, FetchOptions};
pub use manifest::{Block, Entry, Manifest, TreeBuilder, FANOUT, MAX_DEPTH};
pub use publish::{PublishOptions, Published, Publisher};

use dht_core::Key;

/// Largest file published or fetched unless the caller says otherwise.
pub const DEFAULT_MAX_FILE_LEN: u64 = 256 << 20;

/// Why a publish or a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The node could not be asked (it stopped), or refused to store a block here.
    #[error("node: {0}")]
    Node(String),
    /// The file is larger than the limit in force.
    #[error("the file is larger than the limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// A chunk handed to the publisher is empty or larger than [`MAX_CHUNK`].
    #[error("a chunk of {0} bytes (chunks hold 1 to {MAX_CHUNK} bytes)")]
    BadChunk(usize),
    /// The hash names a record that is not a manifest (a chunk, or another kind of record).
    #[error("the record is not a file manifest")]
    NotAManifest,
    /// A manifest breaks the format (see [`Manifest::decode`]) or does not agree with the manifest above it.
    #[error("bad manifest: {0}")]
    BadManifest(String),
    /// No peer answered with a block (chunk or manifest) the file needs.
    #[error("{what} {key:#} not found in the swarm")]
    Missing {
        /// "chunk" or "manifest".
        what: &'static str,
        /// Its key.
        key: Key,
    },
    /// A block fetched does not hash to its key or has another length than its manifest says.
    #[error("{what} {key:#} does not match its manifest")]
    Corrupt {
        /// "chunk" or "manifest".
        what: &'static str,
        /// Its key.
        key: Key,
    },
    /// Reading the source or writing the destination failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
