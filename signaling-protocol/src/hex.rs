//! 32-byte values (keys, nonces, proofs, node ids) as 64 hex digits on the wire.

use dht_core::NodeId;
use serde::{Deserialize, Serialize};

/// 32 bytes, carried as 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hex32(pub [u8; 32]);

impl Serialize for Hex32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from_digit(u32::from(b >> 4), 16).expect("a nibble is a hex digit"));
            out.push(char::from_digit(u32::from(b & 15), 16).expect("a nibble is a hex digit"));
        }
        s.serialize_str(&out)
    }
}

impl<'de> Deserialize<'de> for Hex32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_hex32(&s).map(Hex32).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

impl From<NodeId> for Hex32 {
    fn from(id: NodeId) -> Self {
        Hex32(*id.as_bytes())
    }
}

impl From<Hex32> for NodeId {
    fn from(h: Hex32) -> Self {
        NodeId::from_bytes(h.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_other_lengths_and_digits() {
        let h = Hex32(core::array::from_fn(|i| (i * 37) as u8));
        let text = serde_json::to_string(&h).unwrap();
        assert_eq!(text.len(), 66, "{text}");
        assert_eq!(serde_json::from_str::<Hex32>(&text).unwrap(), h);
        assert_eq!(serde_json::from_str::<Hex32>(&text.to_uppercase()).unwrap(), h);
        for bad in ["\"\"", "\"00\"", &format!("\"{}\"", "g".repeat(64)), &format!("\"{}\"", "é".repeat(32)), "7"] {
            assert!(serde_json::from_str::<Hex32>(bad).is_err(), "{bad}");
        }
    }
}
