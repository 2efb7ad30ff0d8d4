//! One-shot decoding of a buffer of frames versus feeding the same bytes one at a time.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dht_core::{Contact, FrameDecoder, FrameEncoder, Key, Message, NodeId, Record, Request, RequestId, Response};
use std::hint::black_box;

/// A mix like a lookup's traffic: requests, `Nodes` answers of 20 contacts, and a few stores.
fn workload() -> (Vec<u8>, usize) {
    let mut enc = FrameEncoder::new(1 << 20, usize::MAX);
    let mut count = 0;
    for i in 0..200u64 {
        let id = NodeId::from_public_key(&[(i % 256) as u8; 32]);
        let closer = (0..20).map(|j| Contact::bare(NodeId::from_public_key(&[j; 32]))).collect();
        let msgs = [
            Message::Request { id: RequestId(i), body: Request::FindNode { target: id } },
            Message::Response { id: RequestId(i), body: Response::Nodes { closer } },
            Message::Request {
                id: RequestId(i),
                body: Request::Store {
                    record: Record { key: Key::from_name(&i.to_be_bytes()), value: vec![7; 256] },
                    ttl_secs: 60,
                },
            },
        ];
        for m in &msgs {
            enc.push(m).expect("bench messages fit");
            count += 1;
        }
    }
    (enc.pending().to_vec(), count)
}

fn decode_all(bytes: &[u8], chunk: usize) -> usize {
    let mut dec = FrameDecoder::new(1 << 20);
    let mut n = 0;
    for piece in bytes.chunks(chunk) {
        dec.feed(piece);
        while let Some(m) = dec.next_frame().expect("valid stream") {
            black_box(&m);
            n += 1;
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let (bytes, count) = workload();
    assert_eq!(decode_all(&bytes, bytes.len()), count);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(count as u64));
    g.bench_with_input(BenchmarkId::new("one_shot", count), &bytes, |b, bytes| {
        b.iter(|| decode_all(bytes, bytes.len()))
    });
    g.bench_with_input(BenchmarkId::new("byte_at_a_time", count), &bytes, |b, bytes| b.iter(|| decode_all(bytes, 1)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
