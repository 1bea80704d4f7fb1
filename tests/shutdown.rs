//! Graceful shutdown, seen from outside: on SIGTERM or SIGINT every connected client receives a close frame
//! with code 1001 (going away), and once the close handshakes are done the process exits with code 0.

mod common;

use common::{connect, recv_close_code, recv_text, send_text, spawn_app};

fn shuts_down_on(signal: libc::c_int) {
    let mut app = spawn_app(&[]);
    let mut idle = connect(app.ws_addr);
    assert_eq!(recv_text(&mut idle), "welcome to Vix WebSocket chat");
    // A second client that is in a room, so shutdown is checked for sessions with room state too.
    let mut member = connect(app.ws_addr);
    assert_eq!(recv_text(&mut member), "welcome to Vix WebSocket chat");
    send_text(
        &mut member,
        r#"{"type":"room.join","payload":{"room":"general"}}"#,
    );
    assert_eq!(recv_text(&mut member), "joined room: general");

    app.signal(signal);
    assert_eq!(recv_close_code(&mut idle), 1001, "idle client");
    assert_eq!(recv_close_code(&mut member), 1001, "room member");
    let status = app.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; output:\n{}",
        app.output.text()
    );
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_0() {
    shuts_down_on(libc::SIGTERM);
}

#[test]
fn sigint_closes_clients_with_1001_and_exits_0() {
    shuts_down_on(libc::SIGINT);
}

#[test]
fn sigterm_without_clients_exits_0() {
    let mut app = spawn_app(&[]);
    let status = app.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; output:\n{}",
        app.output.text()
    );
}
