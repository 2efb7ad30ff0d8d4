//! The handshake responder facing a peer: either raw bytes (anything a stranger can send before proving a
//! key), or a real initiator whose handshake messages the input corrupts and splits. No panic; a corrupted
//! handshake never opens a link.
#![no_main]

use dht_core::Instant;
use dht_link::{Identity, Link, LinkConfig};
use libfuzzer_sys::fuzz_target;

/// Fixed keys, derived once (deriving a public key costs as much as a handshake step).
fn identity(n: u8) -> &'static Identity {
    static KEYS: std::sync::OnceLock<[Identity; 2]> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        [Identity::from_private(&[7; 32]).expect("a fixed key"), Identity::from_private(&[9; 32]).expect("a fixed key")]
    });
    &keys[usize::from(n)]
}

fn responder() -> Link {
    Link::responder(identity(0), b"fuzz", Vec::new(), &LinkConfig::default(), Instant::from_millis(1)).expect("responder")
}

fn take(link: &mut Link) -> Vec<u8> {
    let out = link.pending().to_vec();
    link.advance(out.len());
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let now = Instant::from_millis(2);
    if mode % 2 == 0 {
        // A stranger's raw bytes, fed in pieces of the size the next byte says.
        let mut r = responder();
        let step = usize::from(rest.first().copied().unwrap_or(1)).max(1);
        for piece in rest.chunks(step) {
            if r.feed(piece, now).is_err() {
                return;
            }
        }
        assert!(!r.is_open(), "raw bytes cannot complete a Noise handshake");
        return;
    }
    // A real initiator; the input XORs its messages (cycled) when it is non-empty.
    let mut i = Link::initiator(identity(1), None, b"fuzz", Vec::new(), &LinkConfig::default(), now).expect("initiator");
    let mut r = responder();
    let mut flips = rest.iter().cycle();
    let tamper = !rest.is_empty() && rest.iter().any(|b| *b != 0);
    for _ in 0..4 {
        let mut to_r = take(&mut i);
        if tamper {
            for b in to_r.iter_mut() {
                *b ^= flips.next().copied().unwrap_or(0);
            }
        }
        if r.feed(&to_r, now).is_err() {
            assert!(!r.is_open());
            return;
        }
        let to_i = take(&mut r);
        if i.feed(&to_i, now).is_err() {
            return;
        }
    }
    if !tamper {
        assert!(i.is_open() && r.is_open(), "an untouched handshake opens");
    }
});
