//! Committed entries per second of a three-node cluster driven in one thread with in-memory
//! delivery and in-memory log storage, every node going through the full Ready cycle.
//!
//! `cargo run --release -p flotilla-raft --example throughput [ENTRIES] [BATCH] [PAYLOAD_BYTES]`
//! (defaults: 1,000,000 entries of 256 bytes proposed in batches of 64).

#[path = "common/cluster.rs"]
mod cluster;

fn main() {
    let mut arguments = std::env::args()
        .skip(1)
        .map(|argument| argument.parse::<u64>().expect("a number"));
    let total = arguments.next().unwrap_or(1_000_000);
    let batch = arguments.next().unwrap_or(64);
    let payload_bytes = arguments.next().unwrap_or(256) as usize;
    let mut cluster = cluster::Cluster::new();
    let measurement = cluster.run(total, batch, payload_bytes);
    println!(
        "3 nodes, {} entries of {} bytes in batches of {}: {:.3} s, {:.0} committed entries/s",
        measurement.entries,
        payload_bytes,
        batch,
        measurement.elapsed.as_secs_f64(),
        measurement.entries_per_second()
    );
}
