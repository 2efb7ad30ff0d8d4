//! # dht-link
//!
//! Turns any byte stream (a TCP connection, a WebRTC data channel) into an authenticated, encrypted link
//! that carries [`Message`]s, without doing any I/O itself.
//!
//! - Handshake: Noise `XX_25519_ChaChaPoly_SHA256` through the `snow` crate (the implementation rust-libp2p
//!   runs; it ships the official test vectors and builds for wasm32). Each side learns the other's static
//!   x25519 key; the peer's [`NodeId`] is the hash of that key, and a dialer that expected a given id refuses
//!   any other. The handshake payloads carry each side's advertised addresses, encrypted.
//! - Transport: Noise transport messages (implicit, never-repeating nonces, so a replayed, reordered,
//!   tampered or foreign frame fails to decrypt and ends the link). Each Noise message travels in one
//!   length-prefixed frame; inside, the plaintext is a stream of length-prefixed bincode messages, so a message
//!   larger than a Noise message (64 KiB) spans several frames.
//!
//! Bytes in: [`Link::feed`]; bytes out: [`Link::pending`] / [`Link::advance`] (resume after a partial write).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use dht_core::{Address, CodecError, Contact, FrameDecoder, FrameEncoder, Instant, Message, NodeId};
use std::time::Duration;

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Largest Noise message (the Noise specification's limit).
pub const MAX_NOISE_MESSAGE: usize = 65_535;
const TAG_LEN: usize = 16;
/// Plaintext carried by one transport frame.
const MAX_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG_LEN;
/// Bytes a handshake message adds to its payload at most (ephemeral key, encrypted static key, two tags).
const HANDSHAKE_OVERHEAD: usize = 32 + 32 + 2 * TAG_LEN;

/// The first `need` bytes of `buf` (at most a Noise message), growing it when it is shorter.
fn scratch(buf: &mut Vec<u8>, need: usize) -> &mut [u8] {
    let need = need.min(MAX_NOISE_MESSAGE);
    if buf.len() < need {
        buf.resize(need, 0);
    }
    &mut buf[..need]
}
/// Largest handshake payload (the advertised addresses).
const MAX_HANDSHAKE_PAYLOAD: usize = 4096;

/// Why a link failed. The link is over after any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer's handshake messages were invalid (bad key, bad MAC, wrong pattern).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer proved a key whose id is not the one we dialed.
    #[error("peer is {actual}, expected {expected}")]
    WrongPeer {
        /// The id we dialed.
        expected: NodeId,
        /// The id the peer proved.
        actual: NodeId,
    },
    /// A transport frame failed to decrypt: tampered, replayed, reordered or from someone else.
    #[error("frame failed authentication")]
    Decrypt,
    /// The framing or a message inside was malformed.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// A message was sent before the handshake finished.
    #[error("handshake not finished")]
    NotReady,
    /// The handshake payload could not be read.
    #[error("bad handshake payload: {0}")]
    BadPayload(String),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// Key generation or a cipher operation failed locally.
    #[error("local crypto error: {0}")]
    Local(String),
}

/// A node's static x25519 key pair. The node id is the SHA-256 of the public half.
#[derive(Clone)]
pub struct Identity {
    private: [u8; 32],
    public: [u8; 32],
}

impl core::fmt::Debug for Identity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Identity({})", self.node_id())
    }
}

fn params() -> snow::params::NoiseParams {
    NOISE_PARAMS.parse().expect("the protocol name is a valid constant")
}

impl Identity {
    /// A fresh random key pair from the operating system's generator.
    pub fn generate() -> Result<Self, LinkError> {
        let kp = snow::Builder::new(params()).generate_keypair().map_err(|e| LinkError::Local(e.to_string()))?;
        Self::from_private(&kp.private)
    }

    /// A fresh key pair whose node id carries `difficulty` bits of proof of work ([`NodeId::work`]), and
    /// the key pairs it took (about 2^difficulty).
    pub fn generate_with_work(difficulty: u32) -> Result<(Self, u64), LinkError> {
        let mut tries = 0u64;
        loop {
            tries += 1;
            let id = Self::generate()?;
            if id.node_id().has_work(difficulty) {
                return Ok((id, tries));
            }
        }
    }

    /// The key pair of a stored private key (32 bytes).
    pub fn from_private(private: &[u8]) -> Result<Self, LinkError> {
        let private: [u8; 32] =
            private.try_into().map_err(|_| LinkError::Local(format!("private key of {} bytes", private.len())))?;
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(private)).to_bytes();
        Ok(Identity { private, public })
    }

    /// The private key bytes, for persisting.
    pub fn private_bytes(&self) -> &[u8; 32] {
        &self.private
    }

    /// The public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// Our node id.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public)
    }
}

/// Limits of a link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// How long the handshake may take.
    pub handshake_timeout: Duration,
    /// Largest message accepted inside the link.
    pub max_message_len: usize,
    /// Bytes the outgoing queue may hold before `send` refuses more.
    pub max_buffered: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig { handshake_timeout: Duration::from_secs(10), max_message_len: 128 * 1024, max_buffered: 1 << 20 }
    }
}

enum State {
    Handshaking(Box<snow::HandshakeState>),
    Open(Box<snow::TransportState>),
    Failed,
}

/// One end of an encrypted link.
pub struct Link {
    state: State,
    expected: Option<NodeId>,
    deadline: Instant,
    /// Outer frames (handshake or ciphertext) read from the wire.
    wire_in: FrameDecoder,
    /// Outer frames to write to the wire.
    wire_out: FrameEncoder,
    /// Plaintext stream of messages after decryption.
    plain_in: FrameDecoder,
    /// Plaintext stream of messages before encryption.
    plain_out: FrameEncoder,
    local_addrs: Vec<Address>,
    remote: Option<Contact>,
    scratch: Vec<u8>,
    max_buffered: usize,
}

impl core::fmt::Debug for Link {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = match self.state {
            State::Handshaking(_) => "handshaking",
            State::Open(_) => "open",
            State::Failed => "failed",
        };
        f.debug_struct("Link").field("state", &state).field("remote", &self.remote).finish()
    }
}

/// Most addresses a handshake may advertise; a peer that sends more is refused.
pub const MAX_ADVERTISED_ADDRS: usize = 8;
/// Longest address a handshake may advertise, in bytes; a peer that sends a longer one is refused.
pub const MAX_ADVERTISED_ADDR_LEN: usize = 256;

/// Our addresses as the handshake carries them: the first [`MAX_ADVERTISED_ADDRS`] of at most
/// [`MAX_ADVERTISED_ADDR_LEN`] bytes (longer ones are left out), within [`MAX_HANDSHAKE_PAYLOAD`].
fn encode_addrs(addrs: &[Address]) -> Vec<u8> {
    let mut out = Vec::new();
    let fitting = addrs.iter().map(|a| a.as_str().as_bytes()).filter(|a| a.len() <= MAX_ADVERTISED_ADDR_LEN);
    for bytes in fitting.take(MAX_ADVERTISED_ADDRS) {
        if out.len() + 2 + bytes.len() > MAX_HANDSHAKE_PAYLOAD {
            break;
        }
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The peer's advertised addresses; more than [`MAX_ADVERTISED_ADDRS`], an address longer than
/// [`MAX_ADVERTISED_ADDR_LEN`] or an empty one ends the handshake (an honest peer sends none of these).
fn decode_addrs(mut bytes: &[u8]) -> Result<Vec<Address>, LinkError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if out.len() == MAX_ADVERTISED_ADDRS {
            return Err(LinkError::BadPayload(format!("more than {MAX_ADVERTISED_ADDRS} addresses")));
        }
        if bytes.len() < 2 {
            return Err(LinkError::BadPayload("truncated address length".into()));
        }
        let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
        if len == 0 || len > MAX_ADVERTISED_ADDR_LEN {
            return Err(LinkError::BadPayload(format!("an address of {len} bytes (1 to {MAX_ADVERTISED_ADDR_LEN})")));
        }
        let rest = &bytes[2..];
        if rest.len() < len {
            return Err(LinkError::BadPayload("truncated address".into()));
        }
        let s = std::str::from_utf8(&rest[..len]).map_err(|_| LinkError::BadPayload("address is not UTF-8".into()))?;
        out.push(Address::new(s));
        bytes = &rest[len..];
    }
    Ok(out)
}

impl Link {
    fn new(
        identity: &Identity,
        initiator: bool,
        expected: Option<NodeId>,
        prologue: &[u8],
        local_addrs: Vec<Address>,
        config: &LinkConfig,
        now: Instant,
    ) -> Result<Self, LinkError> {
        let local = |e: snow::Error| LinkError::Local(e.to_string());
        let builder = snow::Builder::new(params()).local_private_key(&identity.private).map_err(local)?;
        let builder = builder.prologue(prologue).map_err(local)?;
        let hs = if initiator { builder.build_initiator() } else { builder.build_responder() }.map_err(local)?;
        let frame_cap = MAX_NOISE_MESSAGE;
        let mut link = Link {
            state: State::Handshaking(Box::new(hs)),
            expected,
            deadline: now + config.handshake_timeout,
            wire_in: FrameDecoder::new(frame_cap),
            // Unbounded here: `send` checks the cap before encrypting, so a ciphertext (which has used a
            // nonce) is never dropped.
            wire_out: FrameEncoder::new(frame_cap, usize::MAX),
            plain_in: FrameDecoder::new(config.max_message_len),
            plain_out: FrameEncoder::new(config.max_message_len, config.max_buffered),
            local_addrs,
            remote: None,
            // Grown to the largest piece seen (most links never need more than a few KiB).
            scratch: Vec::new(),
            max_buffered: config.max_buffered,
        };
        if initiator {
            link.write_handshake()?;
        }
        Ok(link)
    }

    /// The dialing side. `expected`: the id we meant to reach, if known (the link fails if the peer proves
    /// another). `prologue`: bytes both sides must agree on (e.g. both DTLS fingerprints on WebRTC).
    pub fn initiator(
        identity: &Identity,
        expected: Option<NodeId>,
        prologue: &[u8],
        local_addrs: Vec<Address>,
        config: &LinkConfig,
        now: Instant,
    ) -> Result<Self, LinkError> {
        Self::new(identity, true, expected, prologue, local_addrs, config, now)
    }

    /// The accepting side.
    pub fn responder(
        identity: &Identity,
        prologue: &[u8],
        local_addrs: Vec<Address>,
        config: &LinkConfig,
        now: Instant,
    ) -> Result<Self, LinkError> {
        Self::new(identity, false, None, prologue, local_addrs, config, now)
    }

    fn fail<T>(&mut self, e: LinkError) -> Result<T, LinkError> {
        self.state = State::Failed;
        Err(e)
    }

    /// Writes our next handshake message if it is our turn; moves to transport mode when done.
    fn write_handshake(&mut self) -> Result<(), LinkError> {
        let State::Handshaking(hs) = &mut self.state else { return Ok(()) };
        if !hs.is_my_turn() || hs.is_handshake_finished() {
            return Ok(());
        }
        // Addresses go in the encrypted payloads of messages 2 and 3; message 1 is sent in the clear.
        let payload = if hs.get_remote_static().is_some() || !hs.is_initiator() {
            encode_addrs(&self.local_addrs)
        } else {
            Vec::new()
        };
        let out = scratch(&mut self.scratch, payload.len() + HANDSHAKE_OVERHEAD);
        let len = match hs.write_message(&payload, out) {
            Ok(len) => len,
            Err(e) => return self.fail(LinkError::Handshake(e.to_string())),
        };
        let frame = self.scratch[..len].to_vec();
        self.wire_out.push_payload(&frame)?;
        self.maybe_finish()
    }

    fn maybe_finish(&mut self) -> Result<(), LinkError> {
        let State::Handshaking(hs) = &self.state else { return Ok(()) };
        if !hs.is_handshake_finished() {
            return Ok(());
        }
        let State::Handshaking(hs) = std::mem::replace(&mut self.state, State::Failed) else { unreachable!() };
        let remote_static: [u8; 32] = match hs.get_remote_static().and_then(|k| k.try_into().ok()) {
            Some(k) => k,
            None => return self.fail(LinkError::Handshake("no remote static key".into())),
        };
        let actual = NodeId::from_public_key(&remote_static);
        if let Some(expected) = self.expected {
            if expected != actual {
                return self.fail(LinkError::WrongPeer { expected, actual });
            }
        }
        let addrs = self.remote.take().map(|c| c.addrs).unwrap_or_default();
        self.remote = Some(Contact { id: actual, addrs });
        match hs.into_transport_mode() {
            Ok(ts) => {
                self.state = State::Open(Box::new(ts));
                Ok(())
            }
            Err(e) => self.fail(LinkError::Handshake(e.to_string())),
        }
    }

    /// Bytes arrived from the wire. Returns the messages they complete; bytes that finish the handshake may
    /// also carry the first messages, so keep what this returns even while the handshake runs.
    /// An error ends the link: close the connection.
    pub fn feed(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<Message>, LinkError> {
        if matches!(self.state, State::Failed) {
            return Err(LinkError::NotReady);
        }
        self.check_deadline(now)?;
        self.wire_in.feed(bytes);
        let mut out = Vec::new();
        loop {
            if matches!(self.state, State::Open(_)) {
                if !self.next_transport_frame()? {
                    break;
                }
                loop {
                    match self.plain_in.next_frame() {
                        Ok(Some(m)) => out.push(m),
                        Ok(None) => break,
                        Err(e) => return self.fail(e.into()),
                    }
                }
                continue;
            }
            let frame = match self.wire_in.next_payload() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return self.fail(e.into()),
            };
            let State::Handshaking(hs) = &mut self.state else { return Err(LinkError::NotReady) };
            let len = match hs.read_message(&frame, scratch(&mut self.scratch, frame.len())) {
                Ok(len) => len,
                Err(e) => return self.fail(LinkError::Handshake(e.to_string())),
            };
            let addrs = match decode_addrs(&self.scratch[..len]) {
                Ok(a) => a,
                Err(e) => return self.fail(e),
            };
            if !addrs.is_empty() {
                self.remote = Some(Contact { id: NodeId::from_bytes([0; 32]), addrs });
            }
            self.maybe_finish()?;
            self.write_handshake()?;
        }
        Ok(out)
    }

    /// Decrypts the next transport frame straight from the wire decoder's buffer into `plain_in`.
    /// `Ok(false)`: no complete frame yet.
    fn next_transport_frame(&mut self) -> Result<bool, LinkError> {
        let State::Open(ts) = &mut self.state else { return Ok(false) };
        let decrypted = match self.wire_in.next_payload_ref() {
            Ok(Some(frame)) => {
                ts.read_message(frame, scratch(&mut self.scratch, frame.len())).map_err(|_| LinkError::Decrypt)
            }
            Ok(None) => return Ok(false),
            Err(e) => Err(e.into()),
        };
        match decrypted {
            Ok(len) => {
                self.plain_in.feed(&self.scratch[..len]);
                Ok(true)
            }
            Err(e) => self.fail(e),
        }
    }

    /// The stream ended: an error if it ended inside a frame or before the handshake finished.
    pub fn finish(&mut self) -> Result<(), LinkError> {
        let buffered = self.wire_in.buffered() + self.plain_in.buffered();
        if buffered > 0 {
            return self.fail(LinkError::Truncated(buffered));
        }
        if !self.is_open() {
            return self.fail(LinkError::Handshake("stream ended during the handshake".into()));
        }
        Ok(())
    }

    /// Fails the link if the handshake is past its deadline.
    pub fn check_deadline(&mut self, now: Instant) -> Result<(), LinkError> {
        if matches!(self.state, State::Handshaking(_)) && now >= self.deadline {
            return self.fail(LinkError::HandshakeTimeout);
        }
        Ok(())
    }

    /// When [`Link::check_deadline`] must be called, while the handshake runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        matches!(self.state, State::Handshaking(_)).then_some(self.deadline)
    }

    /// Queues a message (encrypting it in Noise-sized pieces). Fails before the handshake is done, or when the
    /// send queue is full (back off until the transport drained it).
    pub fn send(&mut self, msg: &Message) -> Result<(), LinkError> {
        let State::Open(ts) = &mut self.state else { return Err(LinkError::NotReady) };
        let buffered = self.wire_out.buffered();
        if buffered >= self.max_buffered {
            return Err(CodecError::BufferFull { buffered, max: self.max_buffered }.into());
        }
        self.plain_out.push(msg)?;
        while !self.plain_out.is_empty() {
            let take = self.plain_out.pending().len().min(MAX_PLAINTEXT);
            let out = scratch(&mut self.scratch, take + TAG_LEN);
            let len = match ts.write_message(&self.plain_out.pending()[..take], out) {
                Ok(len) => len,
                Err(e) => return self.fail(LinkError::Local(e.to_string())),
            };
            self.plain_out.advance(take);
            self.wire_out.push_payload(&self.scratch[..len]).expect("an unbounded queue takes a frame below the cap");
        }
        Ok(())
    }

    /// Bytes waiting to be written to the wire. Write what the transport takes, then [`Link::advance`].
    pub fn pending(&self) -> &[u8] {
        self.wire_out.pending()
    }

    /// Marks `n` bytes of [`Link::pending`] as written.
    pub fn advance(&mut self, n: usize) {
        self.wire_out.advance(n);
    }

    /// Whether the handshake has finished and messages can flow.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// The authenticated peer (id proven by the handshake, addresses it advertised), once open.
    pub fn remote(&self) -> Option<&Contact> {
        self.remote.as_ref().filter(|_| self.is_open())
    }
}

#[cfg(test)]
mod tests;
