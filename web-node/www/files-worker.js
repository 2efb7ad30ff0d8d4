// Cuts and hashes a file off the page's main thread (a second instance of the wasm module).
// The page posts { type: "file", file, module } (module: the wasm it checked against its hash); the worker reads 1 MiB at a time and answers each slice with
// { type: "chunks", chunks: [{ hash, bytes }], read, total, last } (the bytes transferred, not copied),
// then waits for { type: "next" }: the page takes a slice's chunks before the next is read, so at most
// about one slice waits in memory. A failure is { type: "error", message }.
import init, { FileChunker } from "./web_node.js";

const SLICE = 1 << 20;
let file = null;
let chunker = null;
let at = 0;

async function sendSlice() {
  const end = Math.min(at + SLICE, file.size);
  const bytes = new Uint8Array(await file.slice(at, end).arrayBuffer());
  at = end;
  const last = at >= file.size;
  const chunks = [...chunker.push(bytes), ...(last ? chunker.finish() : [])];
  self.postMessage(
    { type: "chunks", chunks, read: at, total: file.size, last },
    chunks.map((c) => c.bytes.buffer),
  );
}

self.onmessage = async ({ data }) => {
  try {
    if (data.type === "file") {
      await init({ module_or_path: data.module });
      file = data.file;
      chunker = new FileChunker();
      at = 0;
      await sendSlice();
    } else if (data.type === "next" && file && at < file.size) {
      await sendSlice();
    }
  } catch (e) {
    self.postMessage({ type: "error", message: `${e}` });
  }
};
