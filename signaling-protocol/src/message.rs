//! The messages each side sends, and how they are read and written.

use crate::{Hex32, MAX_ADDRS, MAX_ADDR_LEN, MAX_MESSAGE};
use dht_core::{Address, Contact};
use serde::{Deserialize, Serialize};

/// A registered peer as handed to others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its node id.
    pub id: Hex32,
    /// The addresses it advertised at registration.
    pub addrs: Vec<String>,
}

impl From<PeerInfo> for Contact {
    /// A contact to join through: the id the server vouches for (it checked the registration proof) and the
    /// advertised addresses. Links to it still prove the id in their own handshake.
    fn from(p: PeerInfo) -> Self {
        Contact { id: p.id.into(), addrs: p.addrs.into_iter().map(Address::new).collect() }
    }
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// The answer to [`ServerMsg::Challenge`].
    Register {
        /// The client's static x25519 public key; its SHA-256 is the node id registered.
        public_key: Hex32,
        /// [`prove`](crate::prove) over the challenge.
        proof: Hex32,
        /// Addresses to hand out with this peer (e.g. `tcp:127.0.0.1:4000`), at most [`MAX_ADDRS`] of at
        /// most [`MAX_ADDR_LEN`] bytes.
        #[serde(default)]
        addrs: Vec<String>,
        /// The counter that makes the registration's proof of work ([`crate::work_ok`]), when the
        /// challenge asks for work.
        #[serde(default, skip_serializing_if = "is_zero")]
        work: u64,
    },
    /// Relay `data` (an SDP offer or answer, an ICE candidate: opaque to the server) to `to`.
    Signal {
        /// The addressee's node id.
        to: Hex32,
        /// The payload, at most [`MAX_SIGNAL_DATA`](crate::MAX_SIGNAL_DATA) bytes (the server refuses
        /// longer ones with [`ServerMsg::Error`]).
        data: String,
    },
    /// Ask for up to `max` random registered peers other than ourselves.
    Peers {
        /// How many (capped at [`MAX_PEERS_REPLY`](crate::MAX_PEERS_REPLY)).
        max: usize,
    },
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
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
        /// Bits of proof of work the registration must carry (0: none).
        #[serde(default, skip_serializing_if = "is_zero")]
        work: u8,
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

/// Why a text is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than [`MAX_MESSAGE`] (checked before parsing).
    #[error("message of {len} bytes exceeds {MAX_MESSAGE}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Not JSON, or not one of the messages (unknown type or field, a bad hex value, a wrong type).
    #[error("malformed message: {reason}")]
    Malformed {
        /// What the parser said.
        reason: String,
    },
    /// A registration advertising more than [`MAX_ADDRS`] addresses or one longer than [`MAX_ADDR_LEN`].
    #[error("at most {MAX_ADDRS} addresses of {MAX_ADDR_LEN} bytes")]
    TooManyAddresses,
}

fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError::Malformed { reason: e.to_string() })
}

impl ClientMsg {
    /// Reads one client message, refusing one that breaks the protocol's limits. Nothing a client sends
    /// makes this panic.
    pub fn decode(text: &str) -> Result<ClientMsg, DecodeError> {
        if text.len() > MAX_MESSAGE {
            return Err(DecodeError::TooLong { len: text.len() });
        }
        let msg = parse(text)?;
        if let ClientMsg::Register { addrs, .. } = &msg {
            if addrs.len() > MAX_ADDRS || addrs.iter().any(|a| a.len() > MAX_ADDR_LEN) {
                return Err(DecodeError::TooManyAddresses);
            }
        }
        Ok(msg)
    }

    /// The message as sent.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("client messages serialize: plain structs with string keys")
    }
}

impl ServerMsg {
    /// Reads one server message. There is no length limit here: a peers answer with long addresses may
    /// exceed [`MAX_MESSAGE`] (the socket bounds what it accepts).
    pub fn decode(text: &str) -> Result<ServerMsg, DecodeError> {
        parse(text)
    }

    /// The message as sent.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("server messages serialize: plain structs with string keys")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_round_trip_and_reject_junk() {
        let msgs = [
            ClientMsg::Register {
                public_key: Hex32([1; 32]),
                proof: Hex32([2; 32]),
                addrs: vec!["tcp:1.2.3.4:5".into()],
                work: 0,
            },
            ClientMsg::Register { public_key: Hex32([1; 32]), proof: Hex32([2; 32]), addrs: vec![], work: 77 },
            ClientMsg::Signal { to: Hex32([0xab; 32]), data: "{\"sdp\":\"v=0\"}".into() },
            ClientMsg::Peers { max: 5 },
        ];
        for m in msgs {
            assert_eq!(ClientMsg::decode(&m.encode()).unwrap(), m);
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
            assert!(matches!(ClientMsg::decode(junk), Err(DecodeError::Malformed { .. })), "{junk}");
        }
    }

    #[test]
    fn limits_are_refused_as_such() {
        let long = format!("{{\"type\":\"peers\",\"max\":1}}{}", " ".repeat(MAX_MESSAGE));
        assert_eq!(ClientMsg::decode(&long), Err(DecodeError::TooLong { len: long.len() }));
        let register = |addrs: Vec<String>| {
            ClientMsg::Register { public_key: Hex32([1; 32]), proof: Hex32([2; 32]), addrs, work: 0 }.encode()
        };
        let ok = register(vec!["a".repeat(MAX_ADDR_LEN); MAX_ADDRS]);
        assert!(ClientMsg::decode(&ok).is_ok());
        for bad in [vec!["a".into(); MAX_ADDRS + 1], vec!["a".repeat(MAX_ADDR_LEN + 1)]] {
            assert_eq!(ClientMsg::decode(&register(bad)), Err(DecodeError::TooManyAddresses));
        }
        // Registrations without addresses are valid (the field defaults to none).
        let bare = format!("{{\"type\":\"register\",\"public_key\":\"{0}\",\"proof\":\"{0}\"}}", "00".repeat(32));
        assert!(matches!(ClientMsg::decode(&bare), Ok(ClientMsg::Register { addrs, .. }) if addrs.is_empty()));
    }

    #[test]
    fn server_messages_round_trip() {
        let msgs = [
            ServerMsg::Challenge { nonce: Hex32([3; 32]), key: Hex32([4; 32]), work: 0 },
            ServerMsg::Challenge { nonce: Hex32([3; 32]), key: Hex32([4; 32]), work: 20 },
            ServerMsg::Registered { id: Hex32([5; 32]) },
            ServerMsg::Signal { from: Hex32([6; 32]), data: "x".into() },
            ServerMsg::Peers { peers: vec![PeerInfo { id: Hex32([7; 32]), addrs: vec!["rtc:ws://h/ws".into()] }] },
            ServerMsg::Error { reason: "unknown peer".into(), to: Some(Hex32([8; 32])) },
            ServerMsg::Error { reason: "busy".into(), to: None },
        ];
        for m in msgs {
            assert_eq!(ServerMsg::decode(&m.encode()).unwrap(), m);
        }
        assert!(matches!(ServerMsg::decode("{\"type\":\"register\"}"), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn a_peer_becomes_a_contact() {
        let c = Contact::from(PeerInfo { id: Hex32([9; 32]), addrs: vec!["tcp:1.2.3.4:5".into()] });
        assert_eq!(c.id, dht_core::NodeId::from_bytes([9; 32]));
        assert_eq!(c.addrs, vec![Address::new("tcp:1.2.3.4:5")]);
    }
}
