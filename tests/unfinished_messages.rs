//! Messages still arriving cannot take the server's memory: a message split into more frames than
//! `WEBSOCKET_MAX_FRAMES_PER_MESSAGE` (an endless run of empty continuations) is closed with 1008, and
//! once a shard's sessions together hold more than `WEBSOCKET_MAX_UNFINISHED_BYTES_PER_SHARD` in
//! unfinished messages, the session holding the most is closed with 1008 while the others, and a client
//! chatting beside them, are served on.

mod library;

use library::{client_frame, start, RawClient};
use roomcast::RunningServer;

const PING: u8 = 0x9;

/// Echoes every text and binary message.
fn echo_server(pairs: &[(&str, &str)]) -> RunningServer {
    start(pairs, |s| {
        s.on_message(|session, text| session.send_text(text))
            .on_binary(|session, data| session.send_binary(data))
    })
}

/// Sends `bytes`, then a ping, and waits for the pong: the server has read everything before it.
fn send_and_sync(client: &mut RawClient, bytes: &[u8], tag: &[u8]) {
    let mut all = bytes.to_vec();
    all.extend(client_frame(PING, true, tag));
    client.send(&all);
    let pong = client.expect_frame();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, tag));
}

fn expect_close(client: &mut RawClient, code: u16) {
    let frame = client.expect_frame();
    assert_eq!(frame.close_code(), Some(code), "{frame:?}");
}

#[test]
fn an_endless_run_of_continuation_frames_is_closed_with_1008() {
    let server = echo_server(&[("WEBSOCKET_MAX_FRAMES_PER_MESSAGE", "16")]);
    let addr = server.websocket_addr();
    let mut bystander = RawClient::upgrade(addr);
    let mut flooder = RawClient::upgrade(addr);
    let mut frames = client_frame(0x1, false, b"");
    for _ in 0..1000 {
        frames.extend(client_frame(0x0, false, b""));
    }
    flooder.send(&frames);
    expect_close(&mut flooder, 1008);
    assert!(flooder.connection_ends());

    // Sixteen frames are still one message.
    let mut sixteen = client_frame(0x1, false, b"six");
    for _ in 0..14 {
        sixteen.extend(client_frame(0x0, false, b""));
    }
    sixteen.extend(client_frame(0x0, true, b"teen"));
    bystander.send(&sixteen);
    assert_eq!(bystander.expect_text(), "sixteen");
}

#[test]
fn past_the_shards_budget_the_session_holding_the_most_is_closed_and_the_rest_served() {
    // One shard, so every session counts against the same budget; 200,000 bytes fit three 50,000-byte
    // unfinished messages and not a fourth of 60,000.
    let server = echo_server(&[
        ("SERVER_IO_THREADS", "1"),
        ("WEBSOCKET_MAX_UNFINISHED_BYTES_PER_SHARD", "200000"),
    ]);
    let addr = server.websocket_addr();
    let mut chatter = RawClient::upgrade(addr);
    let mut holders: Vec<RawClient> = (0..3).map(|_| RawClient::upgrade(addr)).collect();
    for (i, holder) in holders.iter_mut().enumerate() {
        send_and_sync(
            holder,
            &client_frame(0x2, false, &[i as u8; 50_000]),
            b"held",
        );
    }
    let mut heaviest = RawClient::upgrade(addr);
    heaviest.send(&client_frame(0x2, false, &[9; 60_000]));
    expect_close(&mut heaviest, 1008);
    assert!(heaviest.connection_ends());

    chatter.send(&client_frame(0x1, true, b"still here"));
    assert_eq!(chatter.expect_text(), "still here");
    for (i, holder) in holders.iter_mut().enumerate() {
        holder.send(&client_frame(0x0, true, b"!"));
        let echo = holder.expect_frame();
        assert_eq!(echo.opcode, 0x2);
        assert_eq!(echo.payload.len(), 50_001, "holder {i}");
        assert!(echo.payload[..50_000].iter().all(|&b| b == i as u8));
    }
    // The budget was given back as the messages finished: a new large one fits again.
    let mut newcomer = RawClient::upgrade(addr);
    send_and_sync(
        &mut newcomer,
        &client_frame(0x2, false, &[1; 60_000]),
        b"fits",
    );
}
