//! How fast the MVCC store applies puts, by batch size: the state machine's share of a write.
//!
//! `cargo run --release -p flotilla-server --example apply_speed`

use std::time::Instant;

use server::mvcc::{MvccOptions, MvccStore};
use server::proto::etcdserverpb::PutRequest;
use server::proto::flotillapb::{internal_request::Request, InternalRequest};

fn main() {
    let puts_total: u64 = 100_000;
    let key_space: u64 = 10_000;
    for batch_size in [1u64, 8, 64, 512] {
        let mut store = MvccStore::new(MvccOptions::default());
        let total = puts_total;
        let started = Instant::now();
        let mut index = 0u64;
        while index < total {
            let batch: Vec<(u64, InternalRequest)> = (0..batch_size)
                .map(|offset| {
                    let entry_index = index + offset + 1;
                    let key = format!("key-{:08}", (entry_index * 7919) % key_space);
                    let put = PutRequest {
                        key: key.into_bytes(),
                        value: vec![b'v'; 256],
                        ..Default::default()
                    };
                    (
                        entry_index,
                        InternalRequest {
                            id: entry_index,
                            request: Some(Request::Put(put)),
                        },
                    )
                })
                .collect();
            store.apply_batch(&batch);
            index += batch_size;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "batch {batch_size:>4}: {total} puts in {seconds:.2} s, {:.0} puts/s, {:.1} us/put",
            total as f64 / seconds,
            seconds * 1e6 / total as f64
        );
    }
}
