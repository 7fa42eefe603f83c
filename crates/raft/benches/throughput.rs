//! Criterion benchmark of the core's replication path: a three-node in-memory cluster in one
//! thread, proposals in batches of 64 entries of 256 bytes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "../examples/common/cluster.rs"]
#[allow(dead_code)]
mod cluster;

fn replicate(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("three_node_cluster");
    let entries = 64 * 1024;
    group.throughput(Throughput::Elements(entries));
    group.sample_size(20);
    group.bench_function("commit_64k_entries_batch_64_payload_256", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut cluster = cluster::Cluster::new();
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iterations {
                total += cluster.run(entries, 64, 256).elapsed;
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, replicate);
criterion_main!(benches);
