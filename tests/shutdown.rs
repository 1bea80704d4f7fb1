//! Graceful shutdown, seen from outside: on SIGTERM or SIGINT every connected client receives a close frame
//! with code 1001 (going away), and once the close handshakes are done the process exits with code 0. A
//! library user gets the same from `ServerHandle::shutdown` on any thread, with `RunningServer::wait`
//! returning once every executor has ended.

mod common;
mod library;

use std::sync::mpsc;
use std::time::Duration;

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
    assert_exited_0(&app, status);
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
    assert_exited_0(&app, status);
}

fn assert_exited_0(app: &common::App, status: std::process::ExitStatus) {
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; output:\n{}",
        app.output.text()
    );
}

#[test]
fn a_handle_on_another_thread_stops_a_server_that_waits() {
    let server = library::start(&[], |s| s.on_open(|session| session.send_text("hi")));
    let mut client = connect(server.websocket_addr());
    assert_eq!(recv_text(&mut client), "hi");
    let handle = server.handle();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        server.wait();
        let _ = done_tx.send(());
    });
    std::thread::spawn(move || handle.shutdown());
    assert_eq!(recv_close_code(&mut client), 1001);
    done_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("wait() returns once the shards and the HTTP shard have ended");
}
