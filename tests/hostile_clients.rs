//! Many hostile clients at once, over real sockets: 16 threads each open 200 connections and send each a
//! random mix of valid frames, frames with random bits flipped, truncated frames and plain garbage, then
//! leave. Meanwhile a well-behaved client in the same room sends 80 messages one after another and must get
//! every one back, in order, and a newcomer must still be able to connect afterwards. The sequences are
//! random but seeded, so a failure can be replayed.

mod library;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use library::{client_frame, start, tcp, RawClient};
use roomcast::Server;

const HOSTILE_THREADS: u64 = 16;
const SEQUENCES_PER_THREAD: usize = 200;
const GOOD_MESSAGES: usize = 80;

/// xorshift64*: small, seedable, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One hostile sequence: a few frames, each valid, corrupted, truncated or garbage.
fn hostile_sequence(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let opcode = [0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB, 0xF][rng.below(9)];
        let fin = rng.below(4) != 0;
        let len = [0, 1, 2, 125, 126, 127, 1000, 70_000][rng.below(8)];
        let payload = rng.bytes(len.min(4096));
        let mut frame = client_frame(opcode, fin, &payload);
        match rng.below(4) {
            0 => {} // as built
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(frame.len());
                    frame[at] ^= 1 << rng.below(8);
                }
            }
            2 => frame.truncate(rng.below(frame.len())),
            _ => {
                let garbage = rng.below(64);
                frame = rng.bytes(garbage);
            }
        }
        out.extend(frame);
    }
    out
}

#[test]
fn thousands_of_hostile_sequences_leave_a_well_behaved_member_untouched() {
    let server = start(&[], |s: Server| {
        s.on_open(|session| {
            session.join_room("fuzz").expect("no authorization hook");
            session.send_text("ready");
        })
        .on_message(|session, text| session.broadcast_text_to_room("fuzz", text))
    });
    let addr = server.websocket_addr();
    let mut good = RawClient::upgrade(addr);
    assert_eq!(good.expect_text(), "ready");

    let sent = Arc::new(AtomicUsize::new(0));
    let hostile: Vec<_> = (0..HOSTILE_THREADS)
        .map(|seed| {
            let sent = sent.clone();
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed + 1));
                for _ in 0..SEQUENCES_PER_THREAD {
                    let mut client = RawClient::upgrade(addr);
                    // The server may close first: a refused write ends this sequence early, as it should.
                    let _ =
                        std::io::Write::write_all(&mut client.stream, &hostile_sequence(&mut rng));
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // The good member talks while the others attack; other members' valid texts may be mixed in.
    for n in 0..GOOD_MESSAGES {
        let text = format!("good-{n}");
        good.send(&client_frame(0x1, true, text.as_bytes()));
        loop {
            let got = good.expect_frame();
            if got.opcode == 0x1 && got.payload == text.as_bytes() {
                break;
            }
            assert!(
                !(got.opcode == 0x1 && got.text().starts_with("good-")),
                "out of order: {got:?} while waiting for {text}"
            );
            assert_ne!(got.opcode, 0x8, "the good member was closed: {got:?}");
        }
    }
    for thread in hostile {
        thread
            .join()
            .expect("a hostile thread failed to connect: the server stopped accepting");
    }
    assert_eq!(
        sent.load(Ordering::Relaxed),
        (HOSTILE_THREADS as usize) * SEQUENCES_PER_THREAD
    );
    // Still serving: a newcomer connects, and the good member still gets its message back.
    let mut newcomer = RawClient::upgrade(addr);
    assert_eq!(newcomer.expect_text(), "ready");
    drop(tcp(addr));
    good.send(&client_frame(0x1, true, b"after"));
    loop {
        let got = good.expect_frame();
        if got.opcode == 0x1 && got.payload == b"after" {
            break;
        }
    }
}
