//! `cargo run --release -p kvstore --example put_latency [N] [IN_FLIGHT]`: the latency of acknowledged
//! record writes to a `SledStore` in a fresh directory under the system's temporary directory (each write
//! returns once it is on disk), N writes of 1 KiB (default 500), IN_FLIGHT at once (default 1). Prints one
//! JSON line: `{"writes","in_flight","p50_ms","p99_ms","writes_per_s"}`.

// sled is native only: in a wasm32 build (the browser tests build the examples too) this does nothing.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    native::main();
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use futures::stream::{FuturesUnordered, StreamExt};
    use kvstore::{SledStore, Store};
    use std::time::{Duration, Instant};

    pub fn main() {
        let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("numbers"));
        let (n, in_flight) = (args.next().unwrap_or(500), args.next().unwrap_or(1).max(1));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SledStore::open(dir.path().join("db")).expect("sled opens");
        let started = Instant::now();
        let mut took: Vec<Duration> = futures::executor::block_on(async {
            let mut pending = FuturesUnordered::new();
            let mut took = Vec::with_capacity(n);
            for i in 0..n {
                let store = &store;
                pending.push(async move {
                    let t0 = Instant::now();
                    let key = dht_core::Key::from_name(&i.to_be_bytes());
                    store.put_record(key, vec![i as u8; 1024], dht_core::Instant::from_millis(1 << 40)).await.unwrap();
                    t0.elapsed()
                });
                if pending.len() >= in_flight {
                    took.extend(pending.next().await);
                }
            }
            while let Some(t) = pending.next().await {
                took.push(t);
            }
            took
        });
        let total = started.elapsed();
        took.sort();
        let ms = |q: f64| took[((took.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        println!(
            "{{\"writes\":{n},\"in_flight\":{in_flight},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"writes_per_s\":{:.0}}}",
            ms(0.5),
            ms(0.99),
            n as f64 / total.as_secs_f64()
        );
    }
}
