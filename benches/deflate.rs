//! permessage-deflate on the broadcast path: a 1 KiB JSON chat message to 10,000 in-process sessions that
//! all negotiated deflate, compressed once for the room (what roomcast does) versus once per recipient (what
//! a server with a deflate context per session must do), with the plain broadcast as the baseline. Time is
//! per broadcast, fan-out and queueing included; the queues are emptied after each, as the sockets' writes
//! would. Run: `cargo bench --bench deflate`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use roomcast::internals::BenchCluster;

const MEMBERS: usize = 10_000;

/// A chat event of exactly 1 KiB, as the chat app relays it: JSON with ordinary text.
fn chat_message() -> String {
    let mut text = String::from(r#"{"type":"chat.message","payload":{"room":"general","text":""#);
    let words = [
        "hello", "from", "the", "other", "side", "of", "the", "room", "again",
    ];
    let mut i = 0;
    while text.len() < 1024 - 3 {
        text.push_str(words[i % words.len()]);
        text.push(' ');
        i += 7;
    }
    text.truncate(1024 - 3);
    text.push_str(r#""}}"#);
    text
}

fn deflate(c: &mut Criterion) {
    let text = chat_message();
    let mut group = c.benchmark_group("broadcast_1KiB_json_10k");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    group.sample_size(20);
    let plain = BenchCluster::new(&[MEMBERS], "general");
    let deflate = BenchCluster::with_deflate(&[MEMBERS], "general");
    let broadcast: fn(&BenchCluster, &str) = |cluster, text| cluster.broadcast(0, "general", text);
    let to_each: fn(&BenchCluster, &str) = |cluster, text| cluster.send_to_each(text);
    for (name, cluster, send) in [
        ("plain", &plain, broadcast),
        ("deflate_compress_once", &deflate, broadcast),
        ("deflate_per_session", &deflate, to_each),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                send(cluster, &text);
                std::hint::black_box(cluster.drain_queues())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, deflate);
criterion_main!(benches);
