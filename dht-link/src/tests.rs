use super::*;
use dht_core::{Key, Record, Request, RequestId, Response};

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn addrs(s: &str) -> Vec<Address> {
    vec![Address::new(s)]
}

/// Moves bytes both ways until neither side has anything to write; returns what each side received.
fn pump(a: &mut Link, b: &mut Link) -> Result<(Vec<Message>, Vec<Message>), LinkError> {
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    for _ in 0..16 {
        let ab = a.pending().to_vec();
        a.advance(ab.len());
        let ba = b.pending().to_vec();
        b.advance(ba.len());
        if ab.is_empty() && ba.is_empty() {
            break;
        }
        to_b.extend(b.feed(&ab, t(1))?);
        to_a.extend(a.feed(&ba, t(1))?);
    }
    Ok((to_a, to_b))
}

fn pair(expected: Option<NodeId>) -> (Identity, Identity, Link, Link) {
    let (ia, ib) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let cfg = LinkConfig::default();
    let a = Link::initiator(&ia, expected.or(Some(ib.node_id())), b"webdht test", addrs("tcp:127.0.0.1:1"), &cfg, t(0))
        .unwrap();
    let b = Link::responder(&ib, b"webdht test", addrs("tcp:127.0.0.1:2"), &cfg, t(0)).unwrap();
    (ia, ib, a, b)
}

fn ping(n: u64) -> Message {
    Message::Request { id: RequestId(n), body: Request::Ping }
}

#[test]
fn handshake_authenticates_both_ends_and_carries_addresses() {
    let (ia, ib, mut a, mut b) = pair(None);
    assert!(!a.is_open() && a.send(&ping(1)).is_err(), "nothing flows before the handshake");
    pump(&mut a, &mut b).unwrap();
    assert!(a.is_open() && b.is_open());
    assert_eq!(a.remote().unwrap(), &Contact { id: ib.node_id(), addrs: addrs("tcp:127.0.0.1:2") });
    assert_eq!(b.remote().unwrap(), &Contact { id: ia.node_id(), addrs: addrs("tcp:127.0.0.1:1") });
    a.send(&ping(1)).unwrap();
    b.send(&ping(2)).unwrap();
    let (at_a, at_b) = pump(&mut a, &mut b).unwrap();
    assert_eq!((at_a, at_b), (vec![ping(2)], vec![ping(1)]));
}

#[test]
fn identity_round_trips_and_id_is_hash_of_public_key() {
    let id = Identity::generate().unwrap();
    let again = Identity::from_private(id.private_bytes()).unwrap();
    assert_eq!(again.public_key(), id.public_key());
    assert_eq!(id.node_id(), NodeId::from_public_key(id.public_key()));
    assert!(Identity::from_private(&[1; 31]).is_err());
}

#[test]
fn a_peer_with_another_key_is_refused() {
    let impostor_target = Identity::generate().unwrap().node_id();
    let (_, _, mut a, mut b) = pair(Some(impostor_target));
    let err = pump(&mut a, &mut b).unwrap_err();
    assert!(matches!(err, LinkError::WrongPeer { expected, .. } if expected == impostor_target), "{err}");
    assert!(!a.is_open());
}

#[test]
fn different_prologues_fail_the_handshake() {
    let (ia, ib) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let cfg = LinkConfig::default();
    let mut a = Link::initiator(&ia, None, b"fingerprints A", vec![], &cfg, t(0)).unwrap();
    let mut b = Link::responder(&ib, b"fingerprints B", vec![], &cfg, t(0)).unwrap();
    assert!(matches!(pump(&mut a, &mut b), Err(LinkError::Handshake(_))));
}

#[test]
fn tampered_replayed_and_truncated_frames_end_the_link() {
    // Tampered.
    let (_, _, mut a, mut b) = pair(None);
    pump(&mut a, &mut b).unwrap();
    a.send(&ping(1)).unwrap();
    let mut bytes = a.pending().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(b.feed(&bytes, t(2)), Err(LinkError::Decrypt)));
    assert!(b.feed(&[], t(2)).is_err(), "the link stays failed");

    // Replayed.
    let (_, _, mut a, mut b) = pair(None);
    pump(&mut a, &mut b).unwrap();
    a.send(&ping(1)).unwrap();
    let bytes = a.pending().to_vec();
    assert_eq!(b.feed(&bytes, t(2)).unwrap(), vec![ping(1)]);
    assert!(matches!(b.feed(&bytes, t(2)), Err(LinkError::Decrypt)));

    // Truncated.
    let (_, _, mut a, mut b) = pair(None);
    pump(&mut a, &mut b).unwrap();
    a.send(&ping(1)).unwrap();
    let bytes = a.pending().to_vec();
    assert!(b.feed(&bytes[..bytes.len() - 3], t(2)).unwrap().is_empty());
    assert!(matches!(b.finish(), Err(LinkError::Truncated(_))));
}

#[test]
fn handshake_times_out() {
    let (_, _, mut a, _) = pair(None);
    assert_eq!(a.poll_timeout(), Some(t(10_000)));
    assert!(a.check_deadline(t(9_999)).is_ok());
    assert!(matches!(a.check_deadline(t(10_000)), Err(LinkError::HandshakeTimeout)));
}

#[test]
fn garbage_from_a_stranger_is_a_clean_error() {
    let ib = Identity::generate().unwrap();
    let mut b = Link::responder(&ib, b"", vec![], &LinkConfig::default(), t(0)).unwrap();
    let err = b.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", t(1)).unwrap_err();
    assert!(matches!(err, LinkError::Codec(_) | LinkError::Handshake(_)), "{err}");
    let mut b = Link::responder(&ib, b"", vec![], &LinkConfig::default(), t(0)).unwrap();
    assert!(b.feed(&[0, 0, 0, 5, 1, 2, 3, 4, 5], t(1)).is_err());
}

#[test]
fn large_messages_span_several_noise_frames_and_any_split_works() {
    let (_, _, mut a, mut b) = pair(None);
    pump(&mut a, &mut b).unwrap();
    let big = Message::Response {
        id: RequestId(9),
        body: Response::Value {
            record: Box::new(Record::unchecked(Key::from_name(b"k"), vec![5; 100_000])),
            ttl_secs: 60,
            closer: vec![],
        },
    };
    a.send(&big).unwrap();
    a.send(&ping(3)).unwrap();
    let bytes = a.pending().to_vec();
    a.advance(bytes.len());
    assert!(bytes.len() > 2 * MAX_NOISE_MESSAGE / 2, "spans more than one Noise message");
    let mut got = Vec::new();
    for chunk in bytes.chunks(997) {
        got.extend(b.feed(chunk, t(3)).unwrap());
    }
    assert_eq!(got, vec![big, ping(3)]);
}

#[test]
fn oversized_messages_are_refused_by_the_sender() {
    let (_, _, mut a, mut b) = pair(None);
    pump(&mut a, &mut b).unwrap();
    let huge = Message::Request {
        id: RequestId(1),
        body: Request::Store {
            record: Box::new(Record::unchecked(Key::from_name(b"k"), vec![0; 200_000])),
            ttl_secs: 1,
            cas: None,
        },
    };
    assert!(matches!(a.send(&huge), Err(LinkError::Codec(CodecError::FrameTooLarge { .. }))));
    a.send(&ping(1)).unwrap();
    let (_, at_b) = pump(&mut a, &mut b).unwrap();
    assert_eq!(at_b, vec![ping(1)], "the link goes on after a refused send");
}

#[test]
fn a_full_send_queue_refuses_whole_messages_and_loses_nothing() {
    let (ia, ib) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let cfg = LinkConfig { max_buffered: 200, ..LinkConfig::default() };
    let mut a = Link::initiator(&ia, None, b"", vec![], &cfg, t(0)).unwrap();
    let mut b = Link::responder(&ib, b"", vec![], &cfg, t(0)).unwrap();
    pump(&mut a, &mut b).unwrap();
    let mut sent = 0;
    while a.send(&ping(sent)).is_ok() {
        sent += 1;
    }
    assert!(sent > 0 && sent < 20);
    assert!(matches!(a.send(&ping(99)), Err(LinkError::Codec(CodecError::BufferFull { .. }))));
    // The transport takes a few bytes at a time; the queue drains and sending resumes.
    let mut got = Vec::new();
    while !a.pending().is_empty() {
        let n = a.pending().len().min(7);
        let chunk = a.pending()[..n].to_vec();
        a.advance(n);
        got.extend(b.feed(&chunk, t(2)).unwrap());
    }
    a.send(&ping(sent)).unwrap();
    let bytes = a.pending().to_vec();
    got.extend(b.feed(&bytes, t(2)).unwrap());
    assert_eq!(got, (0..=sent).map(ping).collect::<Vec<_>>());
}

/// A handshake payload as a hostile peer could write it: `n` addresses of `len` bytes each.
fn crafted_addrs(n: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend(std::iter::repeat_n(b'a', len));
    }
    out
}

/// A peer advertising thousands of addresses (2,047 empty ones fit the 4 KiB payload) or a very long one
/// is refused at the handshake, instead of its contact carrying them into every message's handling.
#[test]
fn a_handshake_with_too_many_or_too_long_addresses_is_refused() {
    assert_eq!(decode_addrs(&crafted_addrs(8, 256)).unwrap().len(), 8);
    for (n, len) in [(2047, 0), (9, 1), (200, 18), (1, 257), (1, 4000), (1, 0)] {
        let err = decode_addrs(&crafted_addrs(n, len)).unwrap_err();
        assert!(matches!(err, LinkError::BadPayload(_)), "{n} × {len}: {err}");
    }
    // Ours are cut to what peers accept: an honest node is never refused for its own list.
    let ours: Vec<Address> =
        (0..20).map(|i| Address::new(if i == 0 { "x".repeat(300) } else { format!("tcp:10.0.0.{i}:1") })).collect();
    let sent = decode_addrs(&encode_addrs(&ours)).unwrap();
    assert_eq!(sent, ours[1..=MAX_ADVERTISED_ADDRS].to_vec());
    let (ia, ib) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let cfg = LinkConfig::default();
    let mut a = Link::initiator(&ia, Some(ib.node_id()), b"webdht test", ours, &cfg, t(0)).unwrap();
    let mut b = Link::responder(&ib, b"webdht test", addrs("tcp:127.0.0.1:2"), &cfg, t(0)).unwrap();
    pump(&mut a, &mut b).unwrap();
    assert_eq!(b.remote().unwrap().addrs.len(), MAX_ADVERTISED_ADDRS);
}
