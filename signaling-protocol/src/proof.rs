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

/// The server side of a challenge: a fresh x25519 key and nonce for one connection.
pub struct Challenge {
    secret: x25519_dalek::StaticSecret,
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
        Challenge { secret, nonce: Hex32(nonce), key }
    }

    /// The message that opens the connection.
    pub fn message(&self) -> ServerMsg {
        ServerMsg::Challenge { nonce: self.nonce, key: self.key }
    }

    /// Checks a client's proof; on success returns the node id it proved.
    pub fn verify(&self, public_key: &Hex32, proof: &Hex32) -> Result<NodeId, ProofError> {
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
        assert_eq!(c.verify(&public, &proof).unwrap(), NodeId::from_public_key(&public.0));
        // Someone else's public key with our proof.
        let (other, _) = prove(&key(8), &c.nonce, &c.key).unwrap();
        assert_eq!(c.verify(&other, &proof), Err(ProofError::Mismatch));
        // A proof for another challenge.
        let c2 = Challenge::new();
        assert_eq!(c2.verify(&public, &proof), Err(ProofError::Mismatch));
        // A flipped bit.
        let mut bad = proof;
        bad.0[0] ^= 1;
        assert_eq!(c.verify(&public, &bad), Err(ProofError::Mismatch));
    }

    #[test]
    fn low_order_keys_are_refused() {
        let c = Challenge::new();
        // The identity point (all zeros) makes every exchange zero, on either side.
        assert_eq!(c.verify(&Hex32([0; 32]), &Hex32([0; 32])), Err(ProofError::WeakKey));
        assert_eq!(prove(&key(7), &c.nonce, &Hex32([0; 32])), Err(ProofError::WeakKey));
    }
}
