//! Dispatch of one complete text message: a typed JSON event (parsed into type and payload) versus a raw
//! text, which must not pay for JSON. Run: `cargo bench --bench dispatch`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use roomcast::internals::BenchCluster;

fn dispatch(c: &mut Criterion) {
    let cluster = BenchCluster::new(&[1], "general");
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    let typed =
        r#"{"type":"chat.message","payload":{"room":"general","text":"Hello from terminal"}}"#;
    group.bench_function("typed_chat_message", |b| {
        b.iter(|| cluster.dispatch(std::hint::black_box(typed)))
    });
    group.bench_function("raw_ping", |b| {
        b.iter(|| cluster.dispatch(std::hint::black_box("ping")))
    });
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
