//! Registration: the server's challenge and the client's proof that it holds the key behind its node id.

use crate::{Hex32, ServerMsg};
use dht_core::NodeId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Domain separation for the registration proof.
const PROOF_CONTEXT: &[u8] = b"webdht signaling register v1";

/// Why a registration proof is refused (or cannot be made).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofError {
    /// The key is a low-order point: the exchange would be known to everyone.
    #[error("public key gives a non-contributory exchange")]
    WeakKey,
    /// The MAC does not match.
    #[error("proof does not match the key")]
    Mismatch,
    /// The registration does not carry the bits of work the server asked for.
    #[error("the registration lacks {0} bits of work")]
    NoWork(u8),
}

fn mac(shared: &[u8; 32], nonce: &Hex32, server_key: &Hex32, client_key: &Hex32) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(shared).expect("HMAC takes keys of any length");
    m.update(PROOF_CONTEXT);
    m.update(&nonce.0);
    m.update(&server_key.0);
    m.update(&client_key.0);
    m
}

/// The client side: the proof that we hold the private key `private` (our static x25519 key), for the
/// challenge `nonce` / `server_key`. Returns our public key and the proof; [`ProofError::WeakKey`] when the
/// server's key is a low-order point.
pub fn prove(private: &[u8; 32], nonce: &Hex32, server_key: &Hex32) -> Result<(Hex32, Hex32), ProofError> {
    let secret = x25519_dalek::StaticSecret::from(*private);
    let public = Hex32(x25519_dalek::PublicKey::from(&secret).to_bytes());
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(server_key.0));
    if !shared.was_contributory() {
        return Err(ProofError::WeakKey);
    }
    let tag = mac(shared.as_bytes(), nonce, server_key, &public).finalize().into_bytes();
    Ok((public, Hex32(tag.into())))
}

/// Domain separation for the registration's proof of work.
const WORK_CONTEXT: &[u8] = b"webdht signaling work v1";

/// Most bits of work a client does for a registration: a server asking for more is refused (2^24 hashes
/// are a few seconds in a browser).
pub const MAX_WORK_BITS: u8 = 24;

/// Whether `counter` is work of `bits` bits for this challenge and key: SHA-256 of the context, the nonce,
/// the public key and the counter (little-endian) starts with `bits` zero bits.
pub fn work_ok(nonce: &Hex32, public_key: &Hex32, counter: u64, bits: u8) -> bool {
    use sha2::Digest;
    let digest = Sha256::new()
        .chain_update(WORK_CONTEXT)
        .chain_update(nonce.0)
        .chain_update(public_key.0)
        .chain_update(counter.to_le_bytes())
        .finalize();
    let zeros: u32 = digest
        .iter()
        .try_fold(0u32, |acc, b| if *b == 0 { Ok(acc + 8) } else { Err(acc + b.leading_zeros()) })
        .unwrap_or_else(|z| z);
    zeros >= u32::from(bits)
}

/// The client side of [`work_ok`]: the first counter that is work of `bits` bits (about 2^bits hashes);
/// `None` when `bits` is over [`MAX_WORK_BITS`].
pub fn solve_work(nonce: &Hex32, public_key: &Hex32, bits: u8) -> Option<u64> {
    if bits > MAX_WORK_BITS {
        return None;
    }
    (0..).find(|c| work_ok(nonce, public_key, *c, bits))
}

/// The server side of a challenge: a fresh x25519 key and nonce for one connection, and the bits of work
/// asked for.
pub struct Challenge {
    secret: x25519_dalek::StaticSecret,
    /// Bits of work a registration must carry (0: none).
    pub work: u8,
    /// The nonce sent.
    pub nonce: Hex32,
    /// The public key sent.
    pub key: Hex32,
}

impl Challenge {
    /// A fresh challenge from the operating system's random generator.
    pub fn new() -> Self {
        use rand_core::RngCore;
        let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
        let key = Hex32(x25519_dalek::PublicKey::from(&secret).to_bytes());
        let mut nonce = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut nonce);
        Challenge { secret, work: 0, nonce: Hex32(nonce), key }
    }

    /// A fresh challenge asking for `bits` bits of work with the registration.
    pub fn with_work(bits: u8) -> Self {
        Challenge { work: bits, ..Self::new() }
    }

    /// The message that opens the connection.
    pub fn message(&self) -> ServerMsg {
        ServerMsg::Challenge { nonce: self.nonce, key: self.key, work: self.work }
    }

    /// Checks a client's proof and work; on success returns the node id it proved.
    pub fn verify(&self, public_key: &Hex32, proof: &Hex32, work: u64) -> Result<NodeId, ProofError> {
        if !work_ok(&self.nonce, public_key, work, self.work) {
            return Err(ProofError::NoWork(self.work));
        }
        let shared = self.secret.diffie_hellman(&x25519_dalek::PublicKey::from(public_key.0));
        if !shared.was_contributory() {
            return Err(ProofError::WeakKey);
        }
        mac(shared.as_bytes(), &self.nonce, &self.key, public_key)
            .verify_slice(&proof.0)
            .map_err(|_| ProofError::Mismatch)?;
        Ok(NodeId::from_public_key(&public_key.0))
    }
}

impl Default for Challenge {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Challenge").field("nonce", &self.nonce).field("key", &self.key).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> [u8; 32] {
        [seed; 32]
    }

    #[test]
    fn a_proof_verifies_for_its_key_only() {
        let c = Challenge::new();
        let (public, proof) = prove(&key(7), &c.nonce, &c.key).unwrap();
        assert_eq!(c.verify(&public, &proof, 0).unwrap(), NodeId::from_public_key(&public.0));
        // Someone else's public key with our proof.
        let (other, _) = prove(&key(8), &c.nonce, &c.key).unwrap();
        assert_eq!(c.verify(&other, &proof, 0), Err(ProofError::Mismatch));
        // A proof for another challenge.
        let c2 = Challenge::new();
        assert_eq!(c2.verify(&public, &proof, 0), Err(ProofError::Mismatch));
        // A flipped bit.
        let mut bad = proof;
        bad.0[0] ^= 1;
        assert_eq!(c.verify(&public, &bad, 0), Err(ProofError::Mismatch));
    }

    #[test]
    fn low_order_keys_are_refused() {
        let c = Challenge::new();
        // The identity point (all zeros) makes every exchange zero, on either side.
        assert_eq!(c.verify(&Hex32([0; 32]), &Hex32([0; 32]), 0), Err(ProofError::WeakKey));
        assert_eq!(prove(&key(7), &c.nonce, &Hex32([0; 32])), Err(ProofError::WeakKey));
    }

    #[test]
    fn registration_work_is_checked_and_bounded() {
        let c = Challenge::with_work(12);
        let (public, proof) = prove(&key(7), &c.nonce, &c.key).unwrap();
        assert_eq!(
            c.verify(&public, &proof, 0).err(),
            (!work_ok(&c.nonce, &public, 0, 12)).then_some(ProofError::NoWork(12))
        );
        let counter = solve_work(&c.nonce, &public, 12).unwrap();
        assert!(c.verify(&public, &proof, counter).is_ok());
        // Work for another key or challenge does not count (a 12-bit counter is rarely work for both).
        let (other, _) = prove(&key(8), &c.nonce, &c.key).unwrap();
        let theirs = solve_work(&c.nonce, &other, 12).unwrap();
        assert!(theirs == counter || !work_ok(&c.nonce, &public, theirs, 12) || work_ok(&c.nonce, &other, counter, 12));
        assert_eq!(solve_work(&c.nonce, &public, MAX_WORK_BITS + 1), None, "too much asked");
        assert!(work_ok(&c.nonce, &public, 12345, 0), "no work asked, none needed");
    }
}
