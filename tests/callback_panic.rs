//! A panic in application code, triggered by one client's message, closes only that client's session
//! (code 1011) and leaves the shard serving everyone else, on both shards.

mod common;
mod library;

use common::{connect, recv_close_code, recv_text, send_text};
use library::start;

#[test]
fn a_panicking_callback_closes_its_session_with_1011_and_the_shard_serves_on() {
    let server = start(&[("SERVER_IO_THREADS", "2")], |s| {
        s.on_open(|session| session.send_text(&format!("shard:{}", session.shard())))
            .on_message(|session, text| {
                if text == "boom" {
                    panic!("a bug in the application");
                }
                session.send_text(text);
            })
    });
    let addr = server.websocket_addr();
    // Clients on both shards: the kernel spreads connections by hash, so open until both appear.
    let mut clients = Vec::new();
    let mut shards_seen = [false; 2];
    for _ in 0..64 {
        let mut ws = connect(addr);
        let shard = recv_text(&mut ws);
        shards_seen[(shard == "shard:1") as usize] = true;
        clients.push((shard, ws));
        if shards_seen == [true, true] && clients.len() >= 4 {
            break;
        }
    }
    assert_eq!(
        shards_seen,
        [true, true],
        "connections never reached both shards"
    );

    for shard in ["shard:0", "shard:1"] {
        let victim = clients.iter().position(|(s, _)| s == shard).unwrap();
        let (_, mut ws) = clients.remove(victim);
        send_text(&mut ws, "boom");
        assert_eq!(
            recv_close_code(&mut ws),
            1011,
            "the panicking session is closed with 1011"
        );
    }
    for (shard, ws) in &mut clients {
        send_text(ws, "still here");
        assert_eq!(
            recv_text(ws),
            "still here",
            "a session on {shard} stopped being served"
        );
    }
    // New connections are still accepted and served.
    let mut late = connect(addr);
    recv_text(&mut late);
    send_text(&mut late, "hello");
    assert_eq!(recv_text(&mut late), "hello");
}
