//! `dht-bench core [--messages N] [--seed S]`: the core benchmark natively.
//! `dht-bench codec`: one-shot versus chunked and byte-at-a-time decoding of the same stream.
//! `dht-bench pow`: the cost of an id with 12 bits of proof of work.
//! `dht-bench sign`: ed25519 signatures of records made and checked per second.
//! Each prints one JSON line per figure: `{"name","value","unit"}`.

/// Frames per second decoding `bytes` in pieces of each of `chunks` bytes, per round: 41 rounds of at least
/// 25 ms per size, the sizes taking turns within each round so that a slower moment of the machine (this
/// kind of shared virtual machine drifts by tens of percent over seconds) hits all sizes of a round alike.
fn decode_rounds(bytes: &[u8], count: usize, chunks: &[usize]) -> Vec<Vec<f64>> {
    let mut rounds = Vec::new();
    for _ in 0..41 {
        let mut round = Vec::with_capacity(chunks.len());
        for &chunk in chunks {
            let t0 = std::time::Instant::now();
            let mut frames = 0;
            while t0.elapsed().as_millis() < 25 {
                frames += dht_bench::decode_in_chunks(bytes, chunk);
            }
            assert_eq!(frames % count, 0, "every frame decodes");
            round.push(frames as f64 / t0.elapsed().as_secs_f64());
        }
        rounds.push(round);
    }
    rounds
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn codec() {
    let (bytes, count) = dht_bench::codec_stream();
    let rounds = decode_rounds(&bytes, count, &[bytes.len(), 1200, 1]);
    let rate = |i: usize| median(rounds.iter().map(|r| r[i]).collect());
    // Ratios are taken within each round (the two sizes measured side by side), then the median.
    let ratio = |i: usize| median(rounds.iter().map(|r| r[0] / r[i]).collect());
    let (one_shot, mtu, byte) = (rate(0), rate(1), rate(2));
    eprintln!(
        "codec: {count} frames, {} bytes; one shot {one_shot:.0}/s, 1200-byte pieces {mtu:.0}/s, \
         byte at a time {byte:.0}/s (medians of 41 rounds)",
        bytes.len()
    );
    for (name, value, unit) in [
        ("codec_decode_one_shot", one_shot, "msgs/s"),
        ("codec_decode_1200_byte_pieces", mtu, "msgs/s"),
        ("codec_decode_byte_at_a_time", byte, "msgs/s"),
        ("codec_ratio_1200_byte_pieces", ratio(1), "x"),
        ("codec_ratio_byte_at_a_time", ratio(2), "x"),
    ] {
        println!("{{\"name\":\"{name}\",\"value\":{value:.3},\"unit\":\"{unit}\"}}");
    }
}

/// ed25519 records signed and verified per second, natively.
fn sign() {
    let count = 2_000;
    let t0 = std::time::Instant::now();
    let records = dht_bench::sign_records(count);
    let sign = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let ok = dht_bench::verify_records(&records);
    let verify = t1.elapsed().as_secs_f64();
    eprintln!("sign: {count} records signed in {sign:.3} s, {ok} verified in {verify:.3} s");
    println!("{{\"name\":\"ed25519_signs_per_s_native\",\"value\":{:.0},\"unit\":\"1/s\"}}", f64::from(count) / sign);
    println!("{{\"name\":\"ed25519_verifies_per_s_native\",\"value\":{:.0},\"unit\":\"1/s\"}}", ok as f64 / verify);
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut messages = 200_000usize;
    let mut seed = 1u64;
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("core") => {}
        Some("codec") => {
            codec();
            return std::process::ExitCode::SUCCESS;
        }
        Some("sign") => {
            sign();
            return std::process::ExitCode::SUCCESS;
        }
        Some("pow") => {
            // Ids with 12 bits of work: the key pairs tried and the time per id.
            let (difficulty, count) = (12, 8);
            let t0 = std::time::Instant::now();
            let tries = dht_bench::make_ids(difficulty, count);
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            eprintln!("pow: {count} ids of {difficulty} bits in {ms:.0} ms, {tries} key pairs");
            println!(
                "{{\"name\":\"id_work_{difficulty}_ms_per_id_native\",\"value\":{:.1},\"unit\":\"ms\"}}",
                ms / f64::from(count)
            );
            println!(
                "{{\"name\":\"id_work_us_per_try_native\",\"value\":{:.2},\"unit\":\"us\"}}",
                ms * 1000.0 / tries as f64
            );
            return std::process::ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("usage: dht-bench core [--messages N] [--seed S] | dht-bench codec | dht-bench pow");
            return std::process::ExitCode::from(2);
        }
    }
    while let Some(a) = it.next() {
        let v = it.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), v) {
            ("--messages", Some(v)) if (1..=10_000_000).contains(&v) => messages = v as usize,
            ("--seed", Some(v)) => seed = v,
            _ => {
                eprintln!("bad argument {a} (--messages 1..=10000000, --seed N)");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let w = dht_bench::Workload::new(messages, seed);
    // One warm-up run, then the best of three.
    let _ = w.run();
    let mut best = f64::MAX;
    let mut stats = dht_bench::RunStats::default();
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        stats = w.run();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    let rate = stats.handled as f64 / best;
    eprintln!(
        "core: {} messages in {best:.3} s = {rate:.0} msgs/s ({} answers, {} bytes)",
        stats.handled, stats.answers, stats.bytes
    );
    println!("{{\"name\":\"core_msgs_per_s_native\",\"value\":{rate:.0},\"unit\":\"msgs/s\"}}");
    std::process::ExitCode::SUCCESS
}
