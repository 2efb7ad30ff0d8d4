//! Any payload either decodes to a message that re-encodes to a payload decoding to the same message, or is a
//! typed error; never a panic, never an allocation beyond the input's worth.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = dht_core::decode_message(data) {
        let again = dht_core::encode_message(&msg).expect("a decoded message encodes");
        assert_eq!(dht_core::decode_message(&again).expect("its encoding decodes"), msg);
    }
    let _ = dht_core::decode_contacts(data);
});
