//! The write path: 256 sessions on loopback TCP connections, one 100-byte frame queued for each, written
//! by the shard's writer in one io_uring submission, against one `sendmsg` per session (the connection
//! task's own write, and every write before the writer existed). Throughput is in sessions written. The
//! clients' reads between rounds are not timed. Run: `cargo bench --bench writes`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use roomcast::internals::{encode_text, BenchWrites};

const SESSIONS: usize = 256;

fn writes(c: &mut Criterion) {
    let frame = encode_text(&"x".repeat(100));
    let mut group = c.benchmark_group("write_256_sessions");
    group.throughput(Throughput::Elements(SESSIONS as u64));
    for (name, batched) in [("one_submission", true), ("sendmsg_each", false)] {
        let mut sessions = BenchWrites::new(SESSIONS);
        group.bench_function(name, |b| {
            b.iter_custom(|rounds| {
                let mut timed = Duration::ZERO;
                for _ in 0..rounds {
                    sessions.queue(&frame);
                    let start = Instant::now();
                    if batched {
                        sessions.write_batched();
                    } else {
                        sessions.write_each();
                    }
                    timed += start.elapsed();
                    std::hint::black_box(sessions.drain());
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, writes);
criterion_main!(benches);
