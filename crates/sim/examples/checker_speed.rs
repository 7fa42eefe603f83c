//! Times the linearizability checker on a history of a simulated atomic map.
//!
//! `cargo run --release -p flotilla-sim --example checker_speed [operations] [seed]`
//! (defaults: 10000 operations, seed 42): 8 clients, 16 keys, overlapping operations, 3% of
//! them indeterminate.

use std::time::Instant;

use sim::linearizability::{check, AtomicMapWorkload};

fn main() {
    let mut arguments = std::env::args().skip(1);
    let operations = arguments
        .next()
        .map_or(10_000, |text| text.parse().expect("operations: a number"));
    let seed = arguments
        .next()
        .map_or(42, |text| text.parse().expect("seed: a number"));
    let workload = AtomicMapWorkload {
        clients: 8,
        keys: 16,
        operations,
        indeterminate_percent: 3,
        operation_ticks_max: 10,
    };
    let history = workload.generate(seed);
    let started = Instant::now();
    let result = check(&history);
    let elapsed = started.elapsed();
    println!(
        "checked {} ops in {:.1} ms (seed {seed}): {result}",
        history.len(),
        elapsed.as_secs_f64() * 1000.0
    );
    assert!(result.is_ok(), "the history of an atomic map must check");
}
