//! Content-defined chunking that can be fed any split of the input.

use fastcdc::v2020::FastCDC;

/// Smallest chunk (only a file's last chunk may be shorter).
pub const MIN_CHUNK: usize = 4 * 1024;
/// The size chunks average.
pub const AVG_CHUNK: usize = 16 * 1024;
/// Largest chunk: a record's value limit (`dht_core::Config::max_record_size`, 64 KiB by default).
pub const MAX_CHUNK: usize = 64 * 1024;

/// Cuts a byte stream into FastCDC chunks (min 4 KiB, average 16 KiB, max 64 KiB). A cut depends on the
/// bytes from the chunk's start to at most [`MAX_CHUNK`] past it, so a chunk is given out once that many
/// bytes are buffered: feeding the stream in any split gives the same chunks, and an edit moves only the
/// chunks around it.
#[derive(Debug, Default)]
pub struct Chunker {
    pending: Vec<u8>,
}

impl Chunker {
    /// A chunker at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream; the chunks they complete go to `out`, in order.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while self.pending.len() - start >= MAX_CHUNK {
            let len = cut(&self.pending[start..]);
            out.push(self.pending[start..start + len].to_vec());
            start += len;
        }
        self.pending.drain(..start);
    }

    /// Ends the stream: the last chunks go to `out`.
    pub fn finish(mut self, out: &mut Vec<Vec<u8>>) {
        let mut start = 0;
        while start < self.pending.len() {
            let len = cut(&self.pending[start..]);
            out.push(self.pending[start..start + len].to_vec());
            start += len;
        }
        self.pending.clear();
    }

    /// Bytes fed but not yet given out in a chunk.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }
}

/// Length of the chunk at the start of `bytes` (all of them when they are fewer than the minimum).
fn cut(bytes: &[u8]) -> usize {
    let (_, end) = FastCDC::new(bytes, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK).cut(0, bytes.len());
    debug_assert!(end > 0 && end <= MAX_CHUNK.min(bytes.len()), "a cut lies within the chunk limits");
    end
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_core::{RngCore, SeedableRng};

    pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut bytes = vec![0; len];
        rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
        bytes
    }

    fn chunks_of(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        let (mut chunker, mut out) = (Chunker::new(), Vec::new());
        for p in parts {
            chunker.push(p, &mut out);
        }
        chunker.finish(&mut out);
        out
    }

    #[test]
    fn chunks_are_within_limits_and_cover_the_input() {
        let data = random_bytes(1 << 20, 1);
        let chunks = chunks_of(&[&data]);
        assert_eq!(chunks.concat(), data);
        let (last, rest) = chunks.split_last().unwrap();
        assert!(rest.iter().all(|c| (MIN_CHUNK..=MAX_CHUNK).contains(&c.len())));
        assert!(!last.is_empty() && last.len() <= MAX_CHUNK);
        let avg = data.len() / chunks.len();
        assert!((AVG_CHUNK / 2..AVG_CHUNK * 2).contains(&avg), "average chunk {avg} bytes");
    }

    #[test]
    fn empty_and_tiny_inputs() {
        assert!(chunks_of(&[]).is_empty());
        assert_eq!(chunks_of(&[b"abc"]), vec![b"abc".to_vec()]);
    }

    #[test]
    fn an_insert_moves_only_nearby_chunks() {
        let data = random_bytes(2 << 20, 2);
        let mut edited = data.clone();
        edited.insert(data.len() / 2, 0x5a);
        let before: std::collections::HashSet<_> = chunks_of(&[&data]).into_iter().collect();
        let new = chunks_of(&[&edited]).into_iter().filter(|c| !before.contains(c)).count();
        assert!((1..=3).contains(&new), "{new} new chunks after a one-byte insert");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_split_gives_the_same_chunks(seed in 0u64..1000, len in 0usize..300_000, cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
            let data = random_bytes(len, seed);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
            points.sort_unstable();
            let mut parts = Vec::new();
            let mut at = 0;
            for p in points {
                parts.push(&data[at..p]);
                at = p;
            }
            parts.push(&data[at..]);
            prop_assert_eq!(chunks_of(&parts), chunks_of(&[&data]));
        }
    }
}
