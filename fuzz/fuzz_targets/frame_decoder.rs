//! Any bytes, split anywhere, never panic the decoder, and a split never changes what it yields.
#![no_main]

use dht_core::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], split: usize) -> Vec<Result<dht_core::Message, dht_core::CodecError>> {
    let mut dec = FrameDecoder::new(64 * 1024);
    let mut out = Vec::new();
    for piece in [&data[..split], &data[split..]] {
        dec.feed(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = usize::from(data[0]) % data.len();
    let whole = run(&data[1..], 0);
    let halves = run(&data[1..], split.min(data.len() - 1));
    // Frames before an error must agree; an error may surface at a different call but must surface.
    let ok = |v: &Vec<Result<_, _>>| v.iter().filter(|r| r.is_ok()).cloned().collect::<Vec<_>>();
    assert_eq!(ok(&whole), ok(&halves));
    assert_eq!(whole.iter().any(|r| r.is_err()), halves.iter().any(|r| r.is_err()));
});
