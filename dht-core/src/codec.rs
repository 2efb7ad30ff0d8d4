//! Restartable incremental framing: a 4-byte big-endian length, then a bincode payload.
//!
//! The decoder accepts bytes in any split and yields the same frames; the encoder keeps what the transport
//! could not write yet and resumes after a partial write. All bincode use in the project sits in this module
//! so the serialization format can be swapped in one place.

use crate::message::{Contact, Message};
use crate::record::Record;
use bincode::config::{BigEndian, Configuration, Fixint, Limit};
use thiserror::Error;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// The largest frame length any configuration may accept (1 MiB); bincode's allocation limit.
pub const MAX_FRAME_LEN_LIMIT: usize = 1 << 20;

/// bincode settings of the wire format: fixed-width big-endian integers, and a cap of `LIMIT` bytes on what
/// a payload may claim to allocate (bincode 2's standard configuration has none).
fn config_with_limit<const LIMIT: usize>() -> Configuration<BigEndian, Fixint, Limit<LIMIT>> {
    bincode::config::standard().with_big_endian().with_fixed_int_encoding().with_limit::<LIMIT>()
}

/// The wire format's settings for messages.
fn wire_config() -> Configuration<BigEndian, Fixint, Limit<MAX_FRAME_LEN_LIMIT>> {
    config_with_limit::<MAX_FRAME_LEN_LIMIT>()
}

/// Why a stream of frames cannot go on. After a decoder error the stream must be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A header announced a frame above the cap; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced or encoded length.
        len: usize,
        /// The cap in force.
        max: usize,
    },
    /// A header announced an empty frame.
    #[error("empty frame")]
    EmptyFrame,
    /// The payload is not a valid message.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The payload decoded but left bytes over.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The decoder already failed; the stream is over.
    #[error("stream already failed")]
    Failed,
    /// The encoder's queue is full: wait for the transport to drain it.
    #[error("send buffer full ({buffered} bytes buffered, limit {max})")]
    BufferFull {
        /// Bytes waiting to be written.
        buffered: usize,
        /// The cap in force.
        max: usize,
    },
    /// A message could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Encodes one message as a bincode payload (no frame header).
pub fn encode_message(msg: &Message) -> Result<Vec<u8>, CodecError> {
    bincode::encode_to_vec(msg, wire_config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Largest persisted contact list [`decode_contacts`] accepts, in bytes: a table snapshot of 20 contacts in
/// each of 256 buckets, every one with the most addresses a contact may carry, stays below it.
pub const MAX_CONTACTS_LEN: usize = 8 << 20;

/// Encodes a list of contacts (a persisted routing table) with the wire format's settings.
pub fn encode_contacts(contacts: &[Contact]) -> Result<Vec<u8>, CodecError> {
    let bytes = bincode::encode_to_vec(contacts, config_with_limit::<MAX_CONTACTS_LEN>())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if bytes.len() > MAX_CONTACTS_LEN {
        // bincode does not apply its limit when encoding: refuse here what could not be loaded back.
        return Err(CodecError::FrameTooLarge { len: bytes.len(), max: MAX_CONTACTS_LEN });
    }
    Ok(bytes)
}

/// Decodes what [`encode_contacts`] wrote; every byte must be used.
pub fn decode_contacts(bytes: &[u8]) -> Result<Vec<Contact>, CodecError> {
    decode_exact(bytes, config_with_limit::<MAX_CONTACTS_LEN>())
}

/// Decodes one `T` from `bytes` with `config`; every byte must be used.
fn decode_exact<T: bincode::Decode<()>, C: bincode::config::Config>(bytes: &[u8], config: C) -> Result<T, CodecError> {
    let (value, used) =
        bincode::decode_from_slice::<T, _>(bytes, config).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// Encodes a record as a store keeps it (key, value and the owner's signature) with the wire format's
/// settings.
pub fn encode_record(record: &Record) -> Result<Vec<u8>, CodecError> {
    bincode::encode_to_vec(record, wire_config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes what [`encode_record`] wrote; every byte must be used. The record is not checked: the node
/// checks what it reads back.
pub fn decode_record(bytes: &[u8]) -> Result<Record, CodecError> {
    decode_exact(bytes, wire_config())
}

/// Decodes one complete bincode payload; every byte must be used.
pub fn decode_message(payload: &[u8]) -> Result<Message, CodecError> {
    decode_exact(payload, wire_config())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Waiting for the 4 header bytes.
    Header,
    /// Waiting for a payload of this many bytes.
    Body(usize),
    /// An error ended the stream.
    Failed,
}

/// Turns a byte stream, fed in any split, into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
    state: DecodeState,
    max_frame_len: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames above `max_frame_len` bytes (clamped to [`MAX_FRAME_LEN_LIMIT`]).
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            state: DecodeState::Header,
            max_frame_len: max_frame_len.min(MAX_FRAME_LEN_LIMIT),
        }
    }

    /// Appends received bytes. Call [`FrameDecoder::next_frame`] until it returns `Ok(None)` after each feed,
    /// so the buffer never holds more than one partial frame plus the last chunk.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.state == DecodeState::Failed {
            return;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether an error has ended this stream.
    pub fn is_failed(&self) -> bool {
        self.state == DecodeState::Failed
    }

    /// Whether the decoder sits at a frame boundary (nothing partial buffered).
    pub fn is_idle(&self) -> bool {
        self.state == DecodeState::Header && self.buffered() == 0
    }

    fn next_range(&mut self) -> Result<Option<core::ops::Range<usize>>, CodecError> {
        loop {
            let avail = self.buf.len() - self.pos;
            match self.state {
                DecodeState::Failed => return Err(CodecError::Failed),
                DecodeState::Header => {
                    if avail < HEADER_LEN {
                        return Ok(None);
                    }
                    let mut header = [0u8; HEADER_LEN];
                    header.copy_from_slice(&self.buf[self.pos..self.pos + HEADER_LEN]);
                    let len = u32::from_be_bytes(header) as usize;
                    self.pos += HEADER_LEN;
                    if len == 0 {
                        return self.fail(CodecError::EmptyFrame);
                    }
                    if len > self.max_frame_len {
                        return self.fail(CodecError::FrameTooLarge { len, max: self.max_frame_len });
                    }
                    self.state = DecodeState::Body(len);
                }
                DecodeState::Body(len) => {
                    if avail < len {
                        return Ok(None);
                    }
                    let range = self.pos..self.pos + len;
                    self.pos += len;
                    self.state = DecodeState::Header;
                    return Ok(Some(range));
                }
            }
        }
    }

    fn fail<T>(&mut self, err: CodecError) -> Result<T, CodecError> {
        self.state = DecodeState::Failed;
        self.buf = Vec::new();
        self.pos = 0;
        Err(err)
    }

    /// The next complete message. `Ok(None)`: more bytes needed. `Err`: the stream is malformed and over;
    /// every later call returns [`CodecError::Failed`].
    pub fn next_frame(&mut self) -> Result<Option<Message>, CodecError> {
        let Some(range) = self.next_range()? else { return Ok(None) };
        match decode_message(&self.buf[range]) {
            Ok(msg) => Ok(Some(msg)),
            Err(e) => self.fail(e),
        }
    }

    /// The next complete frame's raw payload, for layers that carry something other than a [`Message`]
    /// (ciphertext, handshake messages).
    pub fn next_payload(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        Ok(self.next_payload_ref()?.map(<[u8]>::to_vec))
    }

    /// Like [`FrameDecoder::next_payload`], borrowing the payload from the decoder's buffer instead of
    /// copying it (valid until the next call on the decoder).
    pub fn next_payload_ref(&mut self) -> Result<Option<&[u8]>, CodecError> {
        Ok(self.next_range()?.map(|r| &self.buf[r]))
    }
}

/// Queues frames for a transport that may accept only part of them at a time.
#[derive(Debug)]
pub struct FrameEncoder {
    buf: Vec<u8>,
    pos: usize,
    max_frame_len: usize,
    max_buffered: usize,
}

impl FrameEncoder {
    /// An encoder refusing frames above `max_frame_len` bytes and refusing to queue more than `max_buffered`
    /// bytes (a single frame is always accepted into an empty queue).
    pub fn new(max_frame_len: usize, max_buffered: usize) -> Self {
        FrameEncoder { buf: Vec::new(), pos: 0, max_frame_len: max_frame_len.min(MAX_FRAME_LEN_LIMIT), max_buffered }
    }

    /// Queues one message. On error nothing was queued.
    pub fn push(&mut self, msg: &Message) -> Result<(), CodecError> {
        let start = self.begin_frame()?;
        let res = bincode::encode_into_writer(msg, VecWriter(&mut self.buf), wire_config())
            .map_err(|e| CodecError::Encode(e.to_string()));
        self.finish_frame(start, res)
    }

    /// Queues one raw payload as a frame. On error nothing was queued.
    pub fn push_payload(&mut self, payload: &[u8]) -> Result<(), CodecError> {
        let start = self.begin_frame()?;
        self.buf.extend_from_slice(payload);
        self.finish_frame(start, Ok(()))
    }

    fn begin_frame(&mut self) -> Result<usize, CodecError> {
        let buffered = self.buffered();
        if buffered > 0 && buffered >= self.max_buffered {
            return Err(CodecError::BufferFull { buffered, max: self.max_buffered });
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER_LEN]);
        Ok(start)
    }

    fn finish_frame(&mut self, start: usize, res: Result<(), CodecError>) -> Result<(), CodecError> {
        let len = self.buf.len() - start - HEADER_LEN;
        let check = if len > self.max_frame_len {
            Err(CodecError::FrameTooLarge { len, max: self.max_frame_len })
        } else if len == 0 {
            Err(CodecError::EmptyFrame)
        } else if start > 0 && self.buf.len() > self.max_buffered {
            Err(CodecError::BufferFull { buffered: start, max: self.max_buffered })
        } else {
            Ok(())
        };
        let res = res.and(check);
        match res {
            Ok(()) => {
                let header = u32::try_from(len).expect("len <= MAX_FRAME_LEN_LIMIT fits in u32").to_be_bytes();
                self.buf[start..start + HEADER_LEN].copy_from_slice(&header);
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Bytes queued and not yet written, in order. Hand as many as the transport takes, then call
    /// [`FrameEncoder::advance`] with the count it took.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `written` bytes of [`FrameEncoder::pending`] as sent. Values above the pending count are clamped.
    pub fn advance(&mut self, written: usize) {
        self.pos = (self.pos + written).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Bytes waiting to be written.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether everything queued has been written.
    pub fn is_empty(&self) -> bool {
        self.buffered() == 0
    }
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use crate::message::{Address, Contact, Request, RequestId, Response, StoreRefusal};
    use proptest::prelude::*;

    fn sample_messages() -> Vec<Message> {
        let id = NodeId::from_public_key(&[1; 32]);
        vec![
            Message::Request { id: RequestId(1), body: Request::Ping },
            Message::Response { id: RequestId(1), body: Response::Pong },
            Message::Request { id: RequestId(2), body: Request::FindNode { target: id } },
            Message::Response {
                id: RequestId(2),
                body: Response::Nodes {
                    closer: vec![Contact { id, addrs: vec![Address::new("tcp:127.0.0.1:4000")] }, Contact::bare(id)],
                },
            },
            Message::Request {
                id: RequestId(3),
                body: Request::Store { record: Box::new(Record::immutable(vec![9; 3000])), ttl_secs: 60, cas: None },
            },
            Message::Response { id: RequestId(3), body: Response::StoreAck { refused: None } },
            Message::Request {
                id: RequestId(4),
                body: Request::Store {
                    record: Box::new(
                        Record::signed(&crate::SigningKey::from_bytes(&[3; 32]), b"name", 7, vec![1; 40])
                            .expect("a short salt"),
                    ),
                    ttl_secs: 60,
                    cas: Some(6),
                },
            },
            Message::Response {
                id: RequestId(4),
                body: Response::StoreAck { refused: Some(StoreRefusal::CasFailed { current: 9 }) },
            },
            Message::Relay(Box::new(crate::message::Relayed {
                from: id,
                to: NodeId::from_public_key(&[2; 32]),
                route: vec![NodeId::from_public_key(&[3; 32]), NodeId::from_public_key(&[4; 32])],
                hop: 1,
                payload: br#"{"offer":{"session":1,"sdp":"v=0"}}"#.to_vec(),
                undeliverable: None,
            })),
        ]
    }

    fn encode_all(msgs: &[Message]) -> Vec<u8> {
        let mut enc = FrameEncoder::new(1 << 16, usize::MAX);
        for m in msgs {
            enc.push(m).unwrap();
        }
        enc.pending().to_vec()
    }

    fn decode_split(bytes: &[u8], cuts: &[usize]) -> Vec<Message> {
        let mut dec = FrameDecoder::new(1 << 16);
        let mut out = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(bytes.len());
        for cut in cuts {
            dec.feed(&bytes[start..cut]);
            start = cut;
            while let Some(m) = dec.next_frame().unwrap() {
                out.push(m);
            }
        }
        assert!(dec.is_idle());
        out
    }

    #[test]
    fn one_byte_at_a_time_equals_one_shot() {
        let msgs = sample_messages();
        let bytes = encode_all(&msgs);
        assert_eq!(decode_split(&bytes, &[]), msgs);
        let every: Vec<usize> = (0..bytes.len()).collect();
        assert_eq!(decode_split(&bytes, &every), msgs);
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_frames(cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
            let msgs = sample_messages();
            let bytes = encode_all(&msgs);
            prop_assert_eq!(decode_split(&bytes, &cuts), msgs);
        }

        #[test]
        fn partial_writes_never_lose_or_duplicate(writes in proptest::collection::vec(0usize..700, 1..200)) {
            let msgs = sample_messages();
            let mut enc = FrameEncoder::new(1 << 16, 1 << 20);
            let mut wire = Vec::new();
            let mut queue = msgs.iter();
            let mut w = writes.iter().cycle();
            loop {
                if let Some(m) = queue.next() { enc.push(m).unwrap(); }
                let take = (*w.next().unwrap()).min(enc.pending().len()).max(usize::from(!enc.is_empty()));
                wire.extend_from_slice(&enc.pending()[..take]);
                enc.advance(take);
                if enc.is_empty() && queue.len() == 0 { break; }
            }
            prop_assert_eq!(decode_split(&wire, &[]), msgs);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut dec = FrameDecoder::new(1024);
            dec.feed(&bytes);
            for _ in 0..64 {
                match dec.next_frame() { Ok(Some(_)) => {}, Ok(None) | Err(_) => break }
            }
        }
    }

    #[test]
    fn contact_lists_round_trip() {
        let contacts =
            vec![Contact { id: NodeId::from_public_key(&[3; 32]), addrs: vec![Address::new("tcp:127.0.0.1:1")] }];
        let bytes = encode_contacts(&contacts).unwrap();
        assert_eq!(decode_contacts(&bytes).unwrap(), contacts);
        assert!(decode_contacts(&bytes[..bytes.len() - 1]).is_err());
        assert!(matches!(decode_contacts(&[bytes.clone(), vec![0]].concat()), Err(CodecError::TrailingBytes(1))));
    }

    #[test]
    fn the_largest_table_snapshot_loads_back_and_larger_lists_are_refused() {
        // 20 contacts in each of 256 buckets, each with 4 addresses of 256 bytes (Config's maxima).
        let addr = Address::new(format!("tcp:{}", "9".repeat(252)));
        let contact = |i: u32| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            Contact { id: NodeId::from_public_key(&key), addrs: vec![addr.clone(); 4] }
        };
        let snapshot: Vec<Contact> = (0..256 * 20).map(contact).collect();
        let bytes = encode_contacts(&snapshot).unwrap();
        assert!(bytes.len() > MAX_FRAME_LEN_LIMIT, "larger than a frame: {} bytes", bytes.len());
        assert_eq!(decode_contacts(&bytes).unwrap(), snapshot);
        let too_many: Vec<Contact> = (0..8 * 256 * 20).map(contact).collect();
        assert!(matches!(encode_contacts(&too_many), Err(CodecError::FrameTooLarge { max: MAX_CONTACTS_LEN, .. })));
    }

    #[test]
    fn oversized_header_refused_before_allocating() {
        let mut dec = FrameDecoder::new(1000);
        dec.feed(&u32::MAX.to_be_bytes());
        assert_eq!(dec.next_frame(), Err(CodecError::FrameTooLarge { len: u32::MAX as usize, max: 1000 }));
        assert!(dec.is_failed());
        assert_eq!(dec.next_frame(), Err(CodecError::Failed));
        assert!(dec.buf.capacity() < 1000, "no memory reserved for the refused frame");
    }

    #[test]
    fn malformed_and_trailing_payloads_are_typed_errors() {
        let mut dec = FrameDecoder::new(1000);
        dec.feed(&[0, 0, 0, 2, 0xff, 0xff]);
        assert!(matches!(dec.next_frame(), Err(CodecError::Malformed(_))));

        let mut payload = encode_message(&Message::Response { id: RequestId(7), body: Response::Pong }).unwrap();
        payload.push(0);
        let mut enc = FrameEncoder::new(1000, 1000);
        enc.push_payload(&payload).unwrap();
        let mut dec = FrameDecoder::new(1000);
        dec.feed(enc.pending());
        assert_eq!(dec.next_frame(), Err(CodecError::TrailingBytes(1)));

        let mut dec = FrameDecoder::new(1000);
        dec.feed(&[0, 0, 0, 0]);
        assert_eq!(dec.next_frame(), Err(CodecError::EmptyFrame));
    }

    #[test]
    fn hostile_vec_length_does_not_allocate() {
        // A Nodes response claiming 2^60 contacts in a 13-byte payload.
        let mut payload = vec![1u8]; // Message::Response
        payload.extend_from_slice(&7u64.to_be_bytes()); // request id
        payload.extend_from_slice(&[0, 0, 0, 1]); // Response::Nodes (fixint u32 variant)
        payload.extend_from_slice(&(1u64 << 60).to_be_bytes());
        assert!(matches!(decode_message(&payload), Err(CodecError::Malformed(_))));
    }

    #[test]
    fn encoder_caps_frame_size_and_queue() {
        let big = Message::Request {
            id: RequestId(1),
            body: Request::Store { record: Box::new(Record::immutable(vec![0; 2000])), ttl_secs: 1, cas: None },
        };
        let mut enc = FrameEncoder::new(1000, 1 << 20);
        assert!(matches!(enc.push(&big), Err(CodecError::FrameTooLarge { .. })));
        assert!(enc.is_empty(), "a refused frame leaves nothing behind");

        let ping = Message::Request { id: RequestId(1), body: Request::Ping };
        let mut enc = FrameEncoder::new(1000, 40);
        enc.push(&ping).unwrap(); // 17 bytes: header, variant, id, variant
        enc.push(&ping).unwrap();
        let before = enc.buffered();
        assert!(matches!(enc.push(&ping), Err(CodecError::BufferFull { .. })));
        assert_eq!(enc.buffered(), before);
        enc.advance(before);
        enc.push(&ping).unwrap();
    }
}
