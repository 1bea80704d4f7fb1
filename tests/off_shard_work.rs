//! Work done off the shards answers its session by id: `ServerHandle::send_text_to_session` and
//! `send_binary_to_session` from another thread reach the session on whichever shard owns it; while a
//! worker holds a job, the shard serves its other sessions; a session that has ended is skipped, and an id
//! that was never handed out is ignored. Also the subprotocol a client asks for: chosen from the
//! application's list, visible on `Session::subprotocol`, absent when none matches.

mod common;
mod library;

use std::collections::HashSet;
use std::net::TcpStream;
use std::time::Duration;

use common::{connect, recv_text, send_text};
use crossbeam_channel::{Receiver, Sender};
use library::start;
use roomcast::{RunningServer, Server, SessionId};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// How long a test waits for the server to hand over a job.
const JOB_DEADLINE: Duration = Duration::from_secs(10);
/// How many connections the set-up may open while looking for a session on each shard.
const MAX_CONNECTIONS: usize = 64;

/// A server whose sessions say their shard on open, answer `ping`, and hand `work` to the test (standing
/// for a worker pool) as their session id.
fn worker_server() -> (RunningServer, Receiver<SessionId>) {
    let (jobs, queued): (Sender<SessionId>, Receiver<SessionId>) = crossbeam_channel::unbounded();
    let server = start(&[], move |s: Server| {
        s.on_open(|session| session.send_text(&format!("shard:{}", session.shard())))
            .on_message(move |session, text| match text {
                "ping" => session.send_text("pong"),
                "work" => {
                    session.send_text("working");
                    jobs.send(session.id()).expect("the test holds the queue");
                }
                other => session.send_text(&format!("unexpected {other}")),
            })
    });
    (server, queued)
}

/// A client and the shard its session is on.
fn client(server: &RunningServer) -> (WebSocket<TcpStream>, usize) {
    let mut ws = connect(server.websocket_addr());
    let hello = recv_text(&mut ws);
    let shard = hello
        .strip_prefix("shard:")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("expected the shard, got {hello:?}"));
    (ws, shard)
}

fn ask_for_work(ws: &mut WebSocket<TcpStream>, queued: &Receiver<SessionId>) -> SessionId {
    send_text(ws, "work");
    assert_eq!(recv_text(ws), "working");
    queued
        .recv_timeout(JOB_DEADLINE)
        .expect("the job was handed over")
}

#[test]
fn a_worker_answers_its_session_on_either_shard_while_the_shards_serve_others() {
    let (server, queued) = worker_server();
    let handle = server.handle();
    let mut seen_shards = HashSet::new();
    let mut opened = 0;
    while seen_shards.len() < 2 {
        assert!(opened < MAX_CONNECTIONS, "no session landed on both shards");
        opened += 1;
        let (mut asker, shard) = client(&server);
        if !seen_shards.insert(shard) {
            continue;
        }
        let id = ask_for_work(&mut asker, &queued);
        assert_eq!(id.shard(), shard);
        // The job is held (a worker busy for as long as it likes): the shard still serves the asker and
        // a newcomer, because handing the job over was all its callback did.
        let (mut other, _) = client(&server);
        send_text(&mut other, "ping");
        assert_eq!(recv_text(&mut other), "pong");
        send_text(&mut asker, "ping");
        assert_eq!(recv_text(&mut asker), "pong");
        // The worker is done: the answer, from this thread, reaches the session that asked, and only it.
        handle.send_text_to_session(id, &format!("done on shard {shard}"));
        assert_eq!(recv_text(&mut asker), format!("done on shard {shard}"));
        handle.send_binary_to_session(id, &[0, 1, 2]);
        match asker.read().expect("the binary answer") {
            Message::Binary(data) => assert_eq!(&data[..], &[0, 1, 2]),
            other => panic!("expected the binary answer, got {other:?}"),
        }
        send_text(&mut other, "ping");
        assert_eq!(
            recv_text(&mut other),
            "pong",
            "the other client got nothing else first"
        );
    }
    server.stop();
}

#[test]
fn an_answer_for_a_session_that_has_ended_or_never_was_is_dropped() {
    let (server, queued) = worker_server();
    let handle = server.handle();
    let (mut gone, _) = client(&server);
    let id = ask_for_work(&mut gone, &queued);
    gone.close(None).expect("close");
    // Wait for the close handshake to finish, so the session has ended before the answer is sent.
    while gone.read().is_ok() {}
    // Its place may be taken by a new session: that one must not get the old session's answer.
    let (mut newcomer, _) = client(&server);
    handle.send_text_to_session(id, "for the session that left");
    handle.send_text_to_session(SessionId(u64::MAX), "for nobody");
    handle.send_text_to_session(SessionId(id.0 ^ 1), "for a wrong counter");
    send_text(&mut newcomer, "ping");
    assert_eq!(
        recv_text(&mut newcomer),
        "pong",
        "nothing meant for others arrived first"
    );
    server.stop();
}

/// Upgrades asking for `protocols` (one `Sec-WebSocket-Protocol` value); returns the answer's value and
/// what the session said its subprotocol is, or the client's refusal of the upgrade.
fn upgrade_asking_for(
    server: &RunningServer,
    protocols: Option<&str>,
) -> Result<(Option<String>, String), tungstenite::Error> {
    let addr = server.websocket_addr();
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(protocols) = protocols {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    }
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (mut ws, response) = tungstenite::client(request, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => panic!("a blocking stream"),
    })?;
    let answer = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    Ok((answer, recv_text(&mut ws)))
}

#[test]
fn a_subprotocol_the_application_speaks_is_agreed_and_visible_on_the_session() {
    let server = start(&[], |s: Server| {
        s.subprotocols(["roomcast.v1", "chat.v0"])
            .on_open(|session| {
                session.send_text(&format!("subprotocol:{:?}", session.subprotocol()))
            })
    });
    let cases = [
        (Some("roomcast.v1"), Some("roomcast.v1")),
        (Some("mqtt, chat.v0, roomcast.v1"), Some("chat.v0")),
        (None, None),
    ];
    for (asked, agreed) in cases {
        let (answer, said) = upgrade_asking_for(&server, asked).expect("upgraded");
        assert_eq!(answer.as_deref(), agreed, "asked for {asked:?}");
        assert_eq!(
            said,
            format!("subprotocol:{agreed:?}"),
            "asked for {asked:?}"
        );
    }
    // Only subprotocols the application does not speak: the answer names none, and the client, as
    // RFC 6455 §4.1 and browsers do, refuses the connection.
    let refused = upgrade_asking_for(&server, Some("mqtt")).expect_err("the client refuses");
    assert!(
        matches!(
            refused,
            tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(
                    tungstenite::error::SubProtocolError::NoSubProtocol
                )
            )
        ),
        "{refused:?}"
    );
    server.stop();
}
