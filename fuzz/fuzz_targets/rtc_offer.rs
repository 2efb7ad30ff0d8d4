//! What a native node accepts from the signaling server for a new WebRTC link: a signal's JSON (any peer
//! can send one through the server), and in an offer or answer an SDP that webrtc-rs parses (its `rtc-sdp`
//! parser, the first step of `set_remote_description`) and from which the node takes the DTLS fingerprints
//! of the link's Noise prologue. Any input is a typed error or a value; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use transport_webrtc::{fingerprints, prologue, Signal};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let sdp = match serde_json::from_str::<Signal>(text) {
        Ok(Signal::Offer { sdp, .. } | Signal::Answer { sdp, .. }) => sdp,
        // A trickled candidate: only its plausibility check runs on it before webrtc-rs sees it.
        Ok(Signal::Candidate { candidate, .. }) => {
            let _ = candidate.is_plausible();
            return;
        }
        Ok(Signal::Reject { .. }) => return,
        // Not a signal: the same bytes as an SDP, which reaches the parser more often.
        Err(_) => text.to_owned(),
    };
    if let Ok(parsed) = rtc_sdp::description::session::SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes())) {
        // What parsed marshals again and parses again.
        let again = parsed.marshal();
        let _ = rtc_sdp::description::session::SessionDescription::unmarshal(&mut Cursor::new(again.as_bytes()));
    }
    let p = prologue(&sdp, &sdp);
    assert!(p.starts_with(b"webdht/rtc/1"));
    assert!(fingerprints(&sdp).windows(2).all(|w| w[0] < w[1]));
});
