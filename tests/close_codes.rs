//! Close codes on the wire: after a real upgrade, a raw client breaks RFC 6455 in one way per test and must
//! receive a close frame with the code §7.4.1 assigns (1002 protocol error, 1007 invalid UTF-8, 1009 too
//! big, the last decided from the frame header alone), readable before the server ends the TCP connection,
//! with `on_error` called once. A clean client close (1000) is echoed with 1000 and the connection ends
//! without an error; a close frame carrying a code no endpoint may send (1005, 999) is a protocol error.

mod library;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use library::{client_frame, close_payload, masked_header, start, RawClient};
use roomcast::RunningServer;

/// An echo server with `WEBSOCKET_MAX_MESSAGE_SIZE=1024` that counts `on_error` calls.
fn echo_server() -> (RunningServer, Arc<AtomicUsize>) {
    let errors = Arc::new(AtomicUsize::new(0));
    let counted = errors.clone();
    let server = start(&[("WEBSOCKET_MAX_MESSAGE_SIZE", "1024")], move |s| {
        s.on_message(|session, text| session.send_text(text))
            .on_binary(|session, data| session.send_binary(data))
            .on_error(move |_, _| {
                counted.fetch_add(1, Ordering::SeqCst);
            })
    });
    (server, errors)
}

/// Upgrades, proves the session works with one echoed message, sends `bytes`, and checks that the next
/// frame is a close frame with `code`, that the server then ends the connection, and that `on_error` ran
/// exactly once.
fn expect_protocol_close(bytes: &[u8], code: u16) {
    let (server, errors) = echo_server();
    let mut client = RawClient::upgrade(server.websocket_addr());
    client.send(&client_frame(0x1, true, b"still fine"));
    assert_eq!(client.expect_text(), "still fine");

    client.send(bytes);
    let frame = client.expect_frame();
    assert_eq!(
        frame.close_code(),
        Some(code),
        "expected a close frame with {code} after {bytes:02x?}, got {frame:?} ({:?})",
        frame.text()
    );
    assert!(
        client.connection_ends(),
        "the server did not end the TCP connection after its close frame"
    );
    // on_error runs before the close frame is queued, so it has run by now.
    assert_eq!(errors.load(Ordering::SeqCst), 1, "on_error calls");
    // Closing our side ends the server's drain at once instead of at its close timeout.
    drop(client);
    server.stop();
}

#[test]
fn an_unmasked_client_frame_is_1002() {
    expect_protocol_close(&[0x81, 0x02, b'h', b'i'], 1002);
}

#[test]
fn rsv1_without_an_extension_is_1002() {
    let mut frame = client_frame(0x1, true, b"hi");
    frame[0] |= 0x40;
    expect_protocol_close(&frame, 1002);
}

#[test]
fn reserved_opcode_3_is_1002() {
    expect_protocol_close(&client_frame(0x3, true, b"x"), 1002);
}

#[test]
fn a_fragmented_control_frame_is_1002() {
    expect_protocol_close(&client_frame(0x9, false, b"hb"), 1002);
}

#[test]
fn a_continuation_without_a_message_is_1002() {
    expect_protocol_close(&client_frame(0x0, true, b"orphan"), 1002);
}

#[test]
fn invalid_utf8_text_is_1007() {
    expect_protocol_close(&client_frame(0x1, true, &[b'o', b'k', 0xff, 0xfe]), 1007);
}

#[test]
fn a_header_announcing_more_than_the_limit_is_1009_before_any_payload() {
    // Only the header of a 2048-byte binary frame is sent: a close arriving proves the decision was made
    // from the header, since the payload never comes.
    expect_protocol_close(&masked_header(0x82, 2048), 1009);
}

#[test]
fn a_close_with_code_1005_is_1002() {
    // 1005 means "no code present" and must never be sent in a close frame (RFC 6455 §7.4.1).
    expect_protocol_close(&client_frame(0x8, true, &close_payload(1005, "")), 1002);
}

#[test]
fn a_close_with_code_999_is_1002() {
    expect_protocol_close(&client_frame(0x8, true, &close_payload(999, "")), 1002);
}

#[test]
fn a_client_close_1000_is_echoed_and_the_connection_ends() {
    let (server, errors) = echo_server();
    let mut client = RawClient::upgrade(server.websocket_addr());
    client.send(&client_frame(0x1, true, b"before close"));
    assert_eq!(client.expect_text(), "before close");

    client.send(&client_frame(0x8, true, &close_payload(1000, "done")));
    let frame = client.expect_frame();
    assert_eq!(
        frame.close_code(),
        Some(1000),
        "expected the server to echo close 1000, got {frame:?}"
    );
    assert!(
        client.connection_ends(),
        "the server did not close TCP after echoing the close"
    );
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "a clean close is not an error"
    );
    drop(client);
    server.stop();
}
