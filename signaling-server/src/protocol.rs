//! The wire protocol: JSON text messages over one WebSocket, shared by the server and every client
//! (native and browser).
//!
//! 1. The server opens with [`ServerMsg::Challenge`]: a random nonce and a fresh x25519 key of its own.
//! 2. The client answers [`ClientMsg::Register`] with its static public key and a proof: HMAC-SHA256 keyed
//!    by the x25519 exchange of its static key with the server's fresh key, over the nonce and both keys
//!    ([`prove`]). Only the holder of the private key can compute it, so nobody registers under an id
//!    (the SHA-256 of the key) that is not theirs. The server answers [`ServerMsg::Registered`].
//! 3. Then the client sends [`ClientMsg::Signal`] to a node id and receives [`ServerMsg::Signal`] from
//!    others; the server fills in `from` itself. [`ClientMsg::Peers`] asks for a few random registered peers.
//!
//! Fatal errors close the socket with a close frame whose reason says why; [`ServerMsg::Error`] reports
//! the ones that leave the connection up.

use dht_core::NodeId;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Largest WebSocket message either side sends or accepts, in bytes (SDP offers are a few KiB).
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Largest `data` of a signal: what fits in [`MAX_MESSAGE`] once the server wraps it with the sender's id.
pub const MAX_SIGNAL_DATA: usize = MAX_MESSAGE - 512;
/// Most addresses a registration may advertise.
pub const MAX_ADDRS: usize = 4;
/// Longest advertised address, in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Most peers one [`ClientMsg::Peers`] answer holds.
pub const MAX_PEERS_REPLY: usize = 32;
/// Domain separation for the registration proof.
const PROOF_CONTEXT: &[u8] = b"webdht signaling register v1";

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

/// A registered peer as handed to others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its node id.
    pub id: Hex32,
    /// The addresses it advertised at registration.
    pub addrs: Vec<String>,
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// The answer to [`ServerMsg::Challenge`].
    Register {
        /// The client's static x25519 public key; its SHA-256 is the node id registered.
        public_key: Hex32,
        /// [`prove`] over the challenge.
        proof: Hex32,
        /// Addresses to hand out with this peer (e.g. `tcp:127.0.0.1:4000`), at most [`MAX_ADDRS`].
        #[serde(default)]
        addrs: Vec<String>,
    },
    /// Relay `data` (an SDP offer or answer, an ICE candidate: opaque to the server) to `to`.
    Signal {
        /// The addressee's node id.
        to: Hex32,
        /// The payload.
        data: String,
    },
    /// Ask for up to `max` random registered peers other than ourselves.
    Peers {
        /// How many (capped at [`MAX_PEERS_REPLY`]).
        max: usize,
    },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMsg {
    /// First message on every connection.
    Challenge {
        /// Random, fresh per connection.
        nonce: Hex32,
        /// The server's x25519 public key for this connection only.
        key: Hex32,
    },
    /// Registration accepted under `id`.
    Registered {
        /// The node id (SHA-256 of the registered key).
        id: Hex32,
    },
    /// A payload relayed from another registered peer.
    Signal {
        /// Who sent it (filled in by the server).
        from: Hex32,
        /// The payload, unchanged.
        data: String,
    },
    /// Random registered peers.
    Peers {
        /// At most the number asked for.
        peers: Vec<PeerInfo>,
    },
    /// A request that failed without closing the connection (e.g. the addressee is not registered).
    Error {
        /// What went wrong.
        reason: String,
        /// The addressee of the failed signal, if that is what failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Hex32>,
    },
}

/// Why a registration proof is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
/// challenge `nonce` / `server_key`. Returns our public key and the proof.
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
        // The identity point (all zeros) makes every exchange zero.
        assert_eq!(c.verify(&Hex32([0; 32]), &Hex32([0; 32])), Err(ProofError::WeakKey));
    }

    #[test]
    fn messages_round_trip_and_reject_junk() {
        let msgs = [
            ClientMsg::Register {
                public_key: Hex32([1; 32]),
                proof: Hex32([2; 32]),
                addrs: vec!["tcp:1.2.3.4:5".into()],
            },
            ClientMsg::Signal { to: Hex32([0xab; 32]), data: "{\"sdp\":\"v=0\"}".into() },
            ClientMsg::Peers { max: 5 },
        ];
        for m in msgs {
            let text = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<ClientMsg>(&text).unwrap(), m);
        }
        for junk in [
            "",
            "{}",
            "{\"type\":\"signal\",\"to\":\"zz\",\"data\":\"x\"}",
            "{\"type\":\"signal\",\"to\":\"00\",\"data\":\"x\"}",
            "{\"type\":\"peers\",\"max\":-1}",
            "{\"type\":\"peers\",\"max\":1,\"extra\":2}",
            "{\"type\":\"fly\"}",
            "[1,2,3]",
        ] {
            assert!(serde_json::from_str::<ClientMsg>(junk).is_err(), "{junk}");
        }
    }
}
