//! A room broadcast to 10,000 in-process sessions: encode once, queue the shared frame for every member,
//! and, when members sit on two shards, one crossbeam message to the other shard and its local fan-out.
//! Throughput is in deliveries (one frame queued for one member). Sockets are not involved: this is the
//! server's own cost per delivery. Run: `cargo bench --bench fanout`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roomcast::internals::BenchCluster;

const MEMBERS: usize = 10_000;

fn fanout(c: &mut Criterion) {
    let text = "x".repeat(100);
    let mut group = c.benchmark_group("broadcast_10k");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    for (name, layout) in [
        ("one_shard", vec![MEMBERS]),
        ("two_shards", vec![MEMBERS / 2, MEMBERS / 2]),
    ] {
        let cluster = BenchCluster::new(&layout, "general");
        group.bench_with_input(BenchmarkId::from_parameter(name), &cluster, |b, cluster| {
            b.iter(|| {
                cluster.broadcast(0, "general", &text);
                cluster.deliver_posted();
                // What the sockets' writes would do: the queues are emptied for the next broadcast.
                std::hint::black_box(cluster.drain_queues())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
