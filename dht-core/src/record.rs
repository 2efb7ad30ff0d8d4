//! Records and what makes one trustworthy. A record is either **immutable**: its key is the SHA-256 of
//! its value, so no other value can live under it; or **signed** by its owner's ed25519 key, in the shape
//! of BitTorrent's BEP 44 mutable items in our 256-bit key space: key = SHA-256(public key ‖ salt), a
//! sequence number, and a signature over BEP 44's signing buffer, so only the owner can change it and a
//! holder keeps the highest sequence number. Unsigned records under other keys ("unchecked") exist only
//! for closed swarms ([`crate::RecordPolicy::ClosedSwarm`]): anyone can overwrite them.

use crate::id::Key;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The longest salt a signed record may carry, bytes (BEP 44's limit).
pub const MAX_SALT_LEN: usize = 64;

/// An owner's ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, bincode::Encode, bincode::Decode)]
pub struct OwnerKey(pub [u8; 32]);

impl OwnerKey {
    /// The public half of `signing_key`.
    pub fn of(signing_key: &SigningKey) -> Self {
        OwnerKey(signing_key.verifying_key().to_bytes())
    }

    /// The key of this owner's record named by `salt`: SHA-256(public key ‖ salt).
    pub fn record_key(&self, salt: &[u8]) -> Key {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(salt);
        Key::from_bytes(h.finalize().into())
    }
}

impl core::fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "OwnerKey({})", self)
    }
}

impl core::fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl core::str::FromStr for OwnerKey {
    type Err = crate::id::ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key: Key = s.parse()?;
        Ok(OwnerKey(*key.as_bytes()))
    }
}

/// What makes a record its owner's: the owner, which of the owner's records it is (the salt), its
/// version and the signature over the three.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Signed {
    /// The owner's ed25519 public key.
    pub owner: OwnerKey,
    /// Names the record among the owner's (at most [`MAX_SALT_LEN`] bytes; empty is allowed).
    pub salt: Vec<u8>,
    /// The version: a holder keeps only the highest.
    pub seq: u64,
    /// ed25519 signature of [`signing_buffer`]`(salt, seq, value)` by `owner`.
    pub signature: [u8; 64],
}

/// A value stored under a key, with the proof that it belongs there.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Record {
    /// Where the record lives in the id space.
    pub key: Key,
    /// The payload, at most `Config::max_record_size` bytes.
    pub value: Vec<u8>,
    /// The owner's signature; `None` for immutable (and unchecked) records. Boxed: messages that carry no
    /// signed record (most of them) stay small.
    pub signed: Option<Box<Signed>>,
}

/// Which rule a record follows, as [`Record::verify`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Unsigned, key = SHA-256(value).
    Immutable,
    /// Signed by its owner, key = SHA-256(owner ‖ salt).
    Signed,
    /// Unsigned under any other key: valid only where the policy allows unchecked names.
    Unchecked,
}

/// Why a record is not what it claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A signed record's key is not SHA-256(owner ‖ salt).
    #[error("the key is not SHA-256(owner key ‖ salt)")]
    WrongKey,
    /// The salt is longer than [`MAX_SALT_LEN`].
    #[error("the salt is {0} bytes, above {MAX_SALT_LEN}")]
    SaltTooLong(usize),
    /// The owner key is not an ed25519 public key.
    #[error("the owner key is not an ed25519 public key")]
    BadOwnerKey,
    /// The signature does not verify for the owner key over this salt, seq and value.
    #[error("the signature does not verify")]
    BadSignature,
}

/// BEP 44's signing buffer: `4:salt<len>:<salt>3:seqi<seq>e1:v<len>:<value>`, the salt part only when the
/// salt is not empty (the value taken as a bencoded byte string).
pub fn signing_buffer(salt: &[u8], seq: u64, value: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(salt.len() + value.len() + 48);
    if !salt.is_empty() {
        buf.extend_from_slice(format!("4:salt{}:", salt.len()).as_bytes());
        buf.extend_from_slice(salt);
    }
    buf.extend_from_slice(format!("3:seqi{seq}e1:v{}:", value.len()).as_bytes());
    buf.extend_from_slice(value);
    buf
}

impl Record {
    /// An immutable record: its key is the SHA-256 of `value`.
    pub fn immutable(value: Vec<u8>) -> Self {
        Record { key: Key::from_name(&value), value, signed: None }
    }

    /// Version `seq` of `signing_key`'s record named `salt`, signed.
    pub fn signed(signing_key: &SigningKey, salt: &[u8], seq: u64, value: Vec<u8>) -> Result<Self, RecordError> {
        if salt.len() > MAX_SALT_LEN {
            return Err(RecordError::SaltTooLong(salt.len()));
        }
        let owner = OwnerKey::of(signing_key);
        let signature = signing_key.sign(&signing_buffer(salt, seq, &value)).to_bytes();
        let signed = Signed { owner, salt: salt.to_vec(), seq, signature };
        Ok(Record { key: owner.record_key(salt), value, signed: Some(Box::new(signed)) })
    }

    /// Version `seq` of `owner`'s record named `salt`, with a `signature` of [`signing_buffer`] made
    /// elsewhere (a key the platform keeps, such as WebCrypto's non-extractable keys); checked here, so a
    /// wrong signature never leaves the node.
    pub fn signed_by(
        owner: OwnerKey,
        salt: &[u8],
        seq: u64,
        value: Vec<u8>,
        signature: [u8; 64],
    ) -> Result<Self, RecordError> {
        let signed = Signed { owner, salt: salt.to_vec(), seq, signature };
        let record = Record { key: owner.record_key(salt), value, signed: Some(Box::new(signed)) };
        record.verify()?;
        Ok(record)
    }

    /// An unsigned record under any key: only closed swarms accept it, and anyone can overwrite it.
    pub fn unchecked(key: Key, value: Vec<u8>) -> Self {
        Record { key, value, signed: None }
    }

    /// The version of a signed record.
    pub fn seq(&self) -> Option<u64> {
        self.signed.as_ref().map(|s| s.seq)
    }

    /// The owner of a signed record.
    pub fn owner(&self) -> Option<OwnerKey> {
        self.signed.as_ref().map(|s| s.owner)
    }

    /// Which rule the record follows, checking it: a signed record's key, salt and signature (strict
    /// ed25519 verification); an unsigned one is immutable when its key is its value's hash, else
    /// unchecked (the policy decides whether that is allowed).
    pub fn verify(&self) -> Result<RecordKind, RecordError> {
        let Some(s) = &self.signed else {
            return Ok(if Key::from_name(&self.value) == self.key {
                RecordKind::Immutable
            } else {
                RecordKind::Unchecked
            });
        };
        if s.salt.len() > MAX_SALT_LEN {
            return Err(RecordError::SaltTooLong(s.salt.len()));
        }
        if s.owner.record_key(&s.salt) != self.key {
            return Err(RecordError::WrongKey);
        }
        let owner = VerifyingKey::from_bytes(&s.owner.0).map_err(|_| RecordError::BadOwnerKey)?;
        let signature = Signature::from_bytes(&s.signature);
        owner
            .verify_strict(&signing_buffer(&s.salt, s.seq, &self.value), &signature)
            .map_err(|_| RecordError::BadSignature)?;
        Ok(RecordKind::Signed)
    }

    /// A short digest of the value, to tell two values of one version apart without keeping them.
    pub(crate) fn value_tag(&self) -> [u8; 16] {
        let digest: [u8; 32] = Sha256::digest(&self.value).into();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&digest[..16]);
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("test vectors are hex");
        }
        out
    }

    const BEP44_OWNER: &str = "77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548";

    /// BEP 44's published vectors, carried into our key space: the signing buffer is BEP 44's, so its
    /// signatures verify unchanged (only the key, SHA-256 instead of SHA-1, differs).
    fn bep44(salt: &[u8], signature: &str) -> Record {
        let owner = OwnerKey(unhex(BEP44_OWNER));
        let signed = Signed { owner, salt: salt.to_vec(), seq: 1, signature: unhex(signature) };
        Record { key: owner.record_key(salt), value: b"Hello World!".to_vec(), signed: Some(Box::new(signed)) }
    }

    const SIG_1: &str = "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff\
                         1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01";
    const SIG_2: &str = "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d\
                         df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08";

    #[test]
    fn bep44_signing_buffers_are_bep44s() {
        assert_eq!(signing_buffer(b"", 1, b"Hello World!"), b"3:seqi1e1:v12:Hello World!");
        assert_eq!(signing_buffer(b"foobar", 1, b"Hello World!"), b"4:salt6:foobar3:seqi1e1:v12:Hello World!");
    }

    #[test]
    fn a_signature_made_elsewhere_is_checked() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let owner = OwnerKey::of(&key);
        let signature = key.sign(&signing_buffer(b"name", 3, b"value")).to_bytes();
        let record = Record::signed_by(owner, b"name", 3, b"value".to_vec(), signature).unwrap();
        assert_eq!(record, Record::signed(&key, b"name", 3, b"value".to_vec()).unwrap());
        let wrong = Record::signed_by(owner, b"name", 4, b"value".to_vec(), signature);
        assert_eq!(wrong, Err(RecordError::BadSignature));
        let long = Record::signed_by(owner, &[0; 65], 3, b"value".to_vec(), signature);
        assert_eq!(long, Err(RecordError::SaltTooLong(65)));
    }

    #[test]
    fn bep44_test_vectors_verify() {
        assert_eq!(bep44(b"", SIG_1).verify(), Ok(RecordKind::Signed));
        assert_eq!(bep44(b"foobar", SIG_2).verify(), Ok(RecordKind::Signed));
        // Each signature belongs to its own salt.
        assert_eq!(bep44(b"foobar", SIG_1).verify(), Err(RecordError::BadSignature));
        assert_eq!(bep44(b"", SIG_2).verify(), Err(RecordError::BadSignature));
    }

    #[test]
    fn any_change_to_a_signed_record_is_caught() {
        let sk = SigningKey::from_bytes(&[7; 32]);
        let good = Record::signed(&sk, b"name", 5, b"value".to_vec()).unwrap();
        assert_eq!(good.verify(), Ok(RecordKind::Signed));
        assert_eq!(good.key, OwnerKey::of(&sk).record_key(b"name"));

        let mut other_value = good.clone();
        other_value.value = b"forged".to_vec();
        assert_eq!(other_value.verify(), Err(RecordError::BadSignature));

        let mut replayed_seq = good.clone();
        replayed_seq.signed.as_mut().unwrap().seq = 6;
        assert_eq!(replayed_seq.verify(), Err(RecordError::BadSignature));

        let mut moved = good.clone();
        moved.key = Key::from_name(b"elsewhere");
        assert_eq!(moved.verify(), Err(RecordError::WrongKey));

        let mut other_owner = good.clone();
        let thief = SigningKey::from_bytes(&[8; 32]);
        other_owner.signed.as_mut().unwrap().owner = OwnerKey::of(&thief);
        other_owner.key = OwnerKey::of(&thief).record_key(b"name");
        assert_eq!(other_owner.verify(), Err(RecordError::BadSignature));

        let mut not_a_point = good;
        not_a_point.signed.as_mut().unwrap().owner = OwnerKey([0xff; 32]);
        not_a_point.key = OwnerKey([0xff; 32]).record_key(b"name");
        assert!(matches!(not_a_point.verify(), Err(RecordError::BadOwnerKey | RecordError::BadSignature)));
    }

    #[test]
    fn salts_are_bounded() {
        let sk = SigningKey::from_bytes(&[7; 32]);
        assert!(Record::signed(&sk, &[1; MAX_SALT_LEN], 0, vec![]).is_ok());
        assert_eq!(Record::signed(&sk, &[1; MAX_SALT_LEN + 1], 0, vec![]), Err(RecordError::SaltTooLong(65)));
        let mut long = Record::signed(&sk, b"", 0, vec![]).unwrap();
        long.signed.as_mut().unwrap().salt = vec![0; 65];
        assert_eq!(long.verify(), Err(RecordError::SaltTooLong(65)));
    }

    #[test]
    fn unsigned_records_are_immutable_only_under_their_hash() {
        let r = Record::immutable(b"content".to_vec());
        assert_eq!(r.verify(), Ok(RecordKind::Immutable));
        assert_eq!(Record::unchecked(Key::from_name(b"name"), b"content".to_vec()).verify(), Ok(RecordKind::Unchecked));
    }
}
