//! Files in the JS API (wasm32 only): a chunker for a Web Worker, and a node's publish and fetch.
//!
//! A page publishes a file in two threads: a worker runs [`FileChunker`] (FastCDC and SHA-256 over the
//! file's bytes, read slice by slice) and posts each chunk with its hash; the page hands them to
//! [`FilePublish::add_chunk`], which puts them with a bounded number in flight and skips those this node
//! has put before, then [`FilePublish::finish`] stores the manifests and names the file. A fetch is
//! [`crate::WebNode::open_file`] and [`FileFetch::next`], chunk by chunk in order, each checked.

use dht_core::Key;
use dht_driver::NodeHandle;
use dht_files::{Chunker, Fetch, FetchOptions, FileError, PublishOptions, Publisher};
use futures::stream::{LocalBoxStream, StreamExt};
use serde::Serialize;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

fn file_error(e: FileError) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// Cuts a file into content-defined chunks and hashes them: run it in a Web Worker.
#[wasm_bindgen]
pub struct FileChunker {
    chunker: Option<Chunker>,
}

/// The chunks as an array of `{ hash, bytes }` (hash in hex, bytes a Uint8Array the worker can transfer).
fn chunk_array(chunks: Vec<Vec<u8>>) -> js_sys::Array {
    let out = js_sys::Array::new();
    for chunk in chunks {
        let item = js_sys::Object::new();
        let hash = format!("{:#}", Key::from_name(&chunk));
        let _ = js_sys::Reflect::set(&item, &"hash".into(), &hash.into());
        let _ = js_sys::Reflect::set(&item, &"bytes".into(), &js_sys::Uint8Array::from(chunk.as_slice()).into());
        out.push(&item);
    }
    out
}

#[wasm_bindgen]
impl FileChunker {
    /// A chunker at the start of a file.
    #[wasm_bindgen(constructor)]
    pub fn new() -> FileChunker {
        FileChunker { chunker: Some(Chunker::new()) }
    }

    /// Feeds the file's next bytes (any split); returns the chunks they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<js_sys::Array, JsError> {
        let chunker = self.chunker.as_mut().ok_or_else(|| JsError::new("FileChunker: already finished"))?;
        let mut chunks = Vec::new();
        chunker.push(bytes, &mut chunks);
        Ok(chunk_array(chunks))
    }

    /// Ends the file; returns its last chunks.
    pub fn finish(&mut self) -> Result<js_sys::Array, JsError> {
        let chunker = self.chunker.take().ok_or_else(|| JsError::new("FileChunker: already finished"))?;
        let mut chunks = Vec::new();
        chunker.finish(&mut chunks);
        Ok(chunk_array(chunks))
    }
}

impl Default for FileChunker {
    fn default() -> Self {
        Self::new()
    }
}

/// A file being published (from [`crate::WebNode::publish_file`]).
#[wasm_bindgen]
pub struct FilePublish {
    publisher: Rc<RefCell<Option<Publisher<NodeHandle>>>>,
}

/// What a publish did: `{ hash, len, chunks, sent, reused, manifests, unacked }`.
#[derive(Serialize)]
struct PublishedView {
    hash: String,
    len: f64,
    chunks: usize,
    sent: usize,
    reused: usize,
    manifests: usize,
    unacked: usize,
}

impl FilePublish {
    /// Puts in flight at once from a tab: each goes to up to k peers and waits on their storage. In the
    /// e2e (20 MiB, 4 tabs, 3 natives): 64 (the native default) made peers answer stores so late that they
    /// dropped each other from their routing tables, with main-thread tasks of 139 ms; 32 gave 1.1 MB/s
    /// with a 157 ms task; 8 gives 0.9 MB/s with no task over 50 ms.
    const PARALLEL: usize = 8;

    pub(crate) fn new(handle: NodeHandle, max_len: u64) -> FilePublish {
        let options = PublishOptions { max_len, parallel: Self::PARALLEL };
        FilePublish { publisher: Rc::new(RefCell::new(Some(Publisher::new(handle, options)))) }
    }
}

#[wasm_bindgen]
impl FilePublish {
    /// Adds the file's next chunk, as a [`FileChunker`] gave it (`hash` in hex, `bytes`). Resolves once it is
    /// stored or queued (at most 16 puts wait at once); call one at a time, in the file's order.
    #[wasm_bindgen(js_name = addChunk)]
    pub fn add_chunk(&self, hash: String, bytes: Vec<u8>) -> js_sys::Promise {
        let publisher = Rc::clone(&self.publisher);
        future_to_promise(async move {
            let key: Key =
                hash.parse().map_err(|_| JsValue::from(JsError::new("addChunk: a hash is 64 hex digits")))?;
            let mut p = publisher.borrow_mut().take().ok_or_else(busy)?;
            let result = p.add_chunk(key, bytes).await;
            *publisher.borrow_mut() = Some(p);
            result.map_err(file_error)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Bytes of chunks stored so far (put and acknowledged, or put before).
    pub fn stored(&self) -> f64 {
        self.publisher.borrow().as_ref().map_or(0.0, |p| p.progress().stored as f64)
    }

    /// Stores the manifests and waits for every put. Resolves to `{ hash, len, chunks, sent, reused,
    /// manifests, unacked }`: `hash` names the file.
    pub fn finish(&self) -> js_sys::Promise {
        let publisher = Rc::clone(&self.publisher);
        future_to_promise(async move {
            let p = publisher.borrow_mut().take().ok_or_else(busy)?;
            let done = p.finish().await.map_err(file_error)?;
            let view = PublishedView {
                hash: format!("{:#}", done.hash),
                len: done.len as f64,
                chunks: done.chunks,
                sent: done.sent,
                reused: done.reused,
                manifests: done.manifests,
                unacked: done.unacked,
            };
            serde_wasm_bindgen::to_value(&view).map_err(|e| JsError::new(&e.to_string()).into())
        })
    }
}

fn busy() -> JsValue {
    JsError::new("the publish is finished, or another call on it has not resolved yet").into()
}

/// The checked chunks of a file, in order.
type ChunkStream = LocalBoxStream<'static, Result<Vec<u8>, FileError>>;

/// A file being fetched (from [`crate::WebNode::open_file`]): its length is known, its chunks come in order.
#[wasm_bindgen]
pub struct FileFetch {
    len: u64,
    chunks: usize,
    stream: Rc<RefCell<Option<ChunkStream>>>,
}

impl FileFetch {
    pub(crate) async fn open(handle: NodeHandle, hash: &str, max_len: u64) -> Result<FileFetch, JsValue> {
        let root: Key = hash.parse().map_err(|_| JsValue::from(JsError::new("openFile: a hash is 64 hex digits")))?;
        let options = FetchOptions { max_len, ..FetchOptions::default() };
        let fetch = Fetch::open(handle, root, options).await.map_err(file_error)?;
        let (len, chunks) = (fetch.len(), fetch.chunks().len());
        Ok(FileFetch { len, chunks, stream: Rc::new(RefCell::new(Some(fetch.into_stream(0).boxed_local()))) })
    }
}

#[wasm_bindgen]
impl FileFetch {
    /// The file's length in bytes.
    #[wasm_bindgen(getter)]
    pub fn len(&self) -> f64 {
        self.len as f64
    }

    /// Its number of chunks.
    #[wasm_bindgen(getter)]
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// The next chunk (a Uint8Array, checked against its hash), or null after the last. Call one at a time.
    pub fn next(&self) -> js_sys::Promise {
        let stream = Rc::clone(&self.stream);
        future_to_promise(async move {
            let mut s = stream.borrow_mut().take().ok_or_else(busy)?;
            let item = s.next().await;
            *stream.borrow_mut() = Some(s);
            match item {
                Some(Ok(chunk)) => Ok(js_sys::Uint8Array::from(chunk.as_slice()).into()),
                Some(Err(e)) => Err(file_error(e)),
                None => Ok(JsValue::NULL),
            }
        })
    }
}
