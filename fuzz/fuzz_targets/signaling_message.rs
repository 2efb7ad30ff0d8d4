//! What a signaling client can send: any text is decoded as a client message (a typed error or a message that
//! round-trips), and a registration is checked against a challenge without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling_protocol::{Challenge, ClientMsg};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(msg) = ClientMsg::decode(text) else { return };
    assert_eq!(ClientMsg::decode(&msg.encode()).expect("and decode back"), msg);
    if let ClientMsg::Register { public_key, proof, work, .. } = msg {
        // A forged proof must fail (a fresh challenge each time, so nothing can be precomputed), with or
        // without work asked for.
        assert!(Challenge::new().verify(&public_key, &proof, work).is_err());
        assert!(Challenge::with_work(8).verify(&public_key, &proof, work).is_err());
    }
});
