//! One-shot decoding of a stream of frames versus feeding the same bytes one at a time (criterion).
//! `dht-bench codec` measures the same stream for `cargo xtask bench`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dht_bench::{codec_stream, decode_in_chunks};

fn bench(c: &mut Criterion) {
    let (bytes, count) = codec_stream();
    assert_eq!(decode_in_chunks(&bytes, bytes.len()), count);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(count as u64));
    g.bench_with_input(BenchmarkId::new("one_shot", count), &bytes, |b, bytes| {
        b.iter(|| decode_in_chunks(bytes, bytes.len()))
    });
    g.bench_with_input(BenchmarkId::new("byte_at_a_time", count), &bytes, |b, bytes| {
        b.iter(|| decode_in_chunks(bytes, 1))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
