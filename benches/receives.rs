//! The receive path: 256 sessions on loopback TCP connections, each sent one 100-byte client frame, then
//! received and decoded: through the shard's ring (a multishot receive armed on every connection, all
//! reaped with one `io_uring_enter`, each buffer given back), against the readiness path every session's
//! task took before (its poll's completion, a `recv`, the poll armed again; glommio's task wake-ups are
//! not counted), and against a bare `recv` each. The ring path's wake-up (glommio's poll on the ring's
//! eventfd and the read that clears it, once per wake, not per session) is not counted either. The
//! clients' sends are not timed. Throughput is in sessions received. Run: `cargo bench --bench receives`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use loadtest::codec::{push_frame, OpCode};
use roomcast::internals::{BenchReceives, ReceivePath};

const SESSIONS: usize = 256;
/// Any masking key will do: the server unmasks whatever the client chose.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn receives(c: &mut Criterion) {
    let mut frame = Vec::new();
    push_frame(&mut frame, OpCode::Text, "x".repeat(100).as_bytes(), MASK);
    let mut group = c.benchmark_group("receive_256_sessions");
    group.throughput(Throughput::Elements(SESSIONS as u64));
    for (name, path) in [
        ("ring_one_reap", ReceivePath::Ring),
        ("poll_then_recv", ReceivePath::PollThenRecv),
        ("recv_only", ReceivePath::RecvOnly),
    ] {
        let mut sessions = BenchReceives::new(SESSIONS, path);
        group.bench_function(name, |b| {
            b.iter_custom(|rounds| {
                let mut timed = Duration::ZERO;
                for _ in 0..rounds {
                    sessions.send(&frame);
                    let start = Instant::now();
                    let messages = sessions.receive();
                    timed += start.elapsed();
                    assert_eq!(messages, SESSIONS, "one message from every session");
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, receives);
criterion_main!(benches);
