//! Node ids, record keys and the XOR metric.

use core::fmt;
use sha2::{Digest, Sha256};

/// Length in bytes of ids, keys and distances.
pub const ID_LEN: usize = 32;

/// A 256-bit node identifier: the SHA-256 hash of the node's static x25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, bincode::Encode, bincode::Decode)]
pub struct NodeId([u8; ID_LEN]);

/// A 256-bit record key. Keys and node ids share one space, so a key's home is the nodes closest to it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, bincode::Encode, bincode::Decode)]
pub struct Key([u8; ID_LEN]);

/// The XOR distance between two points of the id space, ordered as a 256-bit big-endian integer.
///
/// Held as four big-endian 64-bit words, most significant first, so comparing two distances is four
/// integer comparisons (lookups and `closest` compare distances in their inner loops).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Distance([u64; 4]);

impl NodeId {
    /// The id of the node whose static public key is `public_key`.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        NodeId(Sha256::digest(public_key).into())
    }

    /// Wraps raw bytes. Use [`NodeId::from_public_key`] for real nodes; this is for ids read back from
    /// storage or drawn at random (bucket refresh targets, simulations).
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        NodeId(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// The proof of work this id carries (S/Kademlia's static puzzle): the leading zero bits of the
    /// SHA-256 of the id. Ids stay uniform (the id itself is not constrained); finding a key whose id has
    /// `d` bits of work takes about 2^d key generations, checking it one hash.
    pub fn work(&self) -> u32 {
        let h: [u8; 32] = Sha256::digest(self.0).into();
        let mut bits = 0;
        for b in h {
            if b == 0 {
                bits += 8;
            } else {
                return bits + b.leading_zeros();
            }
        }
        bits
    }

    /// Whether this id carries at least `difficulty` bits of work (always, for 0, without hashing).
    pub fn has_work(&self, difficulty: u32) -> bool {
        difficulty == 0 || self.work() >= difficulty
    }

    /// XOR distance to `other`.
    pub fn distance(&self, other: &NodeId) -> Distance {
        xor(&self.0, &other.0)
    }

    /// XOR distance to a record key.
    pub fn distance_to_key(&self, key: &Key) -> Distance {
        xor(&self.0, &key.0)
    }

    /// The point of the id space a lookup for `key` aims at.
    pub const fn from_key(key: &Key) -> Self {
        NodeId(key.0)
    }
}

impl Key {
    /// The key for an application-chosen name: SHA-256 of the bytes.
    pub fn from_name(name: &[u8]) -> Self {
        Key(Sha256::digest(name).into())
    }

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        Key(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

#[inline]
fn word(bytes: &[u8; ID_LEN], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
    u64::from_be_bytes(w)
}

#[inline]
fn xor(a: &[u8; ID_LEN], b: &[u8; ID_LEN]) -> Distance {
    Distance([word(a, 0) ^ word(b, 0), word(a, 1) ^ word(b, 1), word(a, 2) ^ word(b, 2), word(a, 3) ^ word(b, 3)])
}

impl Distance {
    /// The zero distance (a point to itself).
    pub const ZERO: Distance = Distance([0; 4]);

    /// Number of leading zero bits (256 for the zero distance).
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for w in self.0 {
            if w == 0 {
                n += 64;
            } else {
                return n + w.leading_zeros();
            }
        }
        n
    }

    /// The k-bucket this distance falls in: its count of leading zero bits, so bucket 0 holds the farther
    /// half of the id space and bucket 255 the single nearest neighbour. `None` for the zero distance.
    pub fn bucket_index(&self) -> Option<usize> {
        let lz = self.leading_zeros();
        if lz >= 256 {
            None
        } else {
            Some(lz as usize)
        }
    }

    /// Bit `i`, counting from the most significant (bit 0) to the least (bit 255).
    pub fn bit(&self, i: usize) -> bool {
        i < 256 && (self.0[i / 64] >> (63 - i % 64)) & 1 == 1
    }

    /// Twice the distance, saturating at the largest distance.
    pub fn doubled(&self) -> Distance {
        if self.0[0] >> 63 == 1 {
            return Distance([u64::MAX; 4]);
        }
        let w = self.0;
        Distance([w[0] << 1 | w[1] >> 63, w[1] << 1 | w[2] >> 63, w[2] << 1 | w[3] >> 63, w[3] << 1])
    }

    /// The distance as 32 big-endian bytes.
    pub fn to_bytes(&self) -> [u8; ID_LEN] {
        let mut out = [0u8; ID_LEN];
        for (i, w) in self.0.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl fmt::Display for NodeId {
    /// The first 8 bytes in hex: enough to tell nodes apart in logs. `{:#}` prints all 32 bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(f, &self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(f, &self.0)
    }
}

fn hex(f: &mut fmt::Formatter<'_>, bytes: &[u8; ID_LEN]) -> fmt::Result {
    let shown = if f.alternate() { &bytes[..] } else { &bytes[..8] };
    for b in shown {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Parses the 64-hex-digit form printed by `{:#}`.
impl core::str::FromStr for NodeId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(NodeId)
    }
}

/// Parses the 64-hex-digit form printed by `{:#}`.
impl core::str::FromStr for Key {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(Key)
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hex digits, got {0:?}")]
pub struct ParseIdError(pub std::string::String);

fn parse_hex(s: &str) -> Result<[u8; ID_LEN], ParseIdError> {
    let err = || ParseIdError(s.chars().take(80).collect());
    let bytes = s.as_bytes();
    if bytes.len() != 2 * ID_LEN {
        return Err(err());
    }
    let mut out = [0u8; ID_LEN];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(err)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(err)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn id_is_sha256_of_public_key() {
        // SHA-256 of 32 zero bytes.
        let id = NodeId::from_public_key(&[0u8; 32]);
        assert_eq!(format!("{id:#}"), "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925");
    }

    #[test]
    fn distance_is_symmetric_xor_and_ordered() {
        let a = NodeId::from_bytes([0xff; 32]);
        let mut b_bytes = [0xff; 32];
        b_bytes[31] = 0xfe;
        let b = NodeId::from_bytes(b_bytes);
        let c = NodeId::from_bytes([0x7f; 32]);
        assert_eq!(a.distance(&b), b.distance(&a));
        assert_eq!(a.distance(&a), Distance::ZERO);
        assert!(a.distance(&b) < a.distance(&c));
        assert_eq!(a.distance(&b).leading_zeros(), 255);
        assert_eq!(a.distance(&b).bucket_index(), Some(255));
        assert_eq!(a.distance(&c).bucket_index(), Some(0));
        assert_eq!(Distance::ZERO.bucket_index(), None);
        let mut x = [0u8; 32];
        x[9] = 0x10;
        let d = NodeId::from_bytes([0; 32]).distance(&NodeId::from_bytes(x));
        assert_eq!(d.leading_zeros(), 75);
        assert!(d.bit(75) && !d.bit(74) && !d.bit(76) && !d.bit(300));
        assert_eq!(d.to_bytes(), x);
        let mut y = [0u8; 32];
        y[9] = 0x20;
        assert_eq!(d.doubled().to_bytes(), y);
        assert_eq!(
            NodeId::from_bytes([0; 32]).distance(&NodeId::from_bytes([0x80; 32])).doubled().to_bytes(),
            [0xff; 32]
        );
    }

    #[test]
    fn hex_round_trip_and_bad_input() {
        let id = NodeId::from_public_key(&[7u8; 32]);
        let s = format!("{id:#}");
        assert_eq!(s.parse::<NodeId>().unwrap(), id);
        assert!("zz".parse::<NodeId>().is_err());
        assert!(s.replace('a', "g").parse::<Key>().is_err() || !s.contains('a'));
        assert_eq!(format!("{id}").len(), 16);
    }
}
