//! The slow-consumer policy (`WEBSOCKET_MAX_BACKPRESSURE=65536`): a room member that never reads is cut
//! off once its unsent bytes pass the limit: `on_error` gets `SlowConsumer`, and when the client finally
//! reads it finds an in-order prefix of the messages followed by close code 1008 (or, if the server's close
//! timeout passed first, the end of the connection). A member that reads receives every message in order:
//! the slow one does not stall it.

mod common;
mod library;

use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{recv_text, send_text};
use library::{start, tcp};
use roomcast::{RunningServer, SessionError};
use tungstenite::{Message, WebSocket};

/// Messages broadcast to the room: 8 MiB, far more than the limit plus the kernel's buffers (about 2.8 MiB
/// on loopback when this was written).
const MESSAGES: usize = 8000;
/// Broadcasts in flight before the reader catches up, so the reader itself stays far under the limit.
const WINDOW: usize = 16;
/// How long the slow client may take to drain and see its end.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// Room members join with `join`; `say:TEXT` broadcasts TEXT to the room; errors go to the channel.
fn server() -> (RunningServer, Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    // The sender's rate limits are off: this is about readers that cannot keep up, not senders.
    let pairs = [
        ("WEBSOCKET_MAX_BACKPRESSURE", "65536"),
        ("WEBSOCKET_RATE_LIMIT_MESSAGES", "0"),
        ("WEBSOCKET_RATE_LIMIT_BYTES", "0"),
    ];
    let server = start(&pairs, move |s| {
        s.on_message(|session, text| {
            if text == "join" {
                session.join_room("flood").expect("no authorization hook");
                session.send_text("joined");
            } else if let Some(text) = text.strip_prefix("say:") {
                session.broadcast_text_to_room("flood", text);
            }
        })
        .on_error(move |_, error| {
            let kind = match error {
                SessionError::SlowConsumer { queued, limit } => {
                    format!("slow consumer {queued} {limit}")
                }
                other => format!("other: {other}"),
            };
            let _ = tx.lock().unwrap().send(kind);
        })
    });
    (server, rx)
}

/// A client whose receive buffer is as small as the kernel allows, so the server's queue fills sooner.
fn small_buffer_client(server: &RunningServer) -> WebSocket<TcpStream> {
    let addr = server.websocket_addr();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect_timeout(&addr.into(), library::READ_TIMEOUT)
        .unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(library::READ_TIMEOUT))
        .unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).expect("upgrade");
    ws
}

fn client(server: &RunningServer) -> WebSocket<TcpStream> {
    let addr = server.websocket_addr();
    tungstenite::client(format!("ws://{addr}/"), tcp(addr))
        .expect("upgrade")
        .0
}

fn message(n: usize) -> String {
    format!("{n:05}:{}", "x".repeat(1024 - 6))
}

#[test]
fn a_member_that_never_reads_is_closed_and_does_not_stall_the_room() {
    let (server, errors) = server();
    let mut slow = small_buffer_client(&server);
    let mut reader = client(&server);
    let mut sender = client(&server);
    for ws in [&mut slow, &mut reader] {
        send_text(ws, "join");
        assert_eq!(recv_text(ws), "joined");
    }

    // The sender broadcasts; the reader reads; the slow client never reads until the end.
    let mut received = 0;
    for n in 0..MESSAGES {
        send_text(&mut sender, &format!("say:{}", message(n)));
        if n + 1 - received >= WINDOW || n + 1 == MESSAGES {
            while received <= n {
                let got = recv_text(&mut reader);
                assert!(
                    got == message(received),
                    "the reader got message {:?} where {received} was due",
                    &got[..5]
                );
                received += 1;
            }
        }
    }
    assert_eq!(received, MESSAGES, "the reader got every message");

    let error = errors
        .recv_timeout(DRAIN_DEADLINE)
        .expect("on_error was called for the slow client");
    assert!(
        error.starts_with("slow consumer"),
        "on_error got {error:?}, not SlowConsumer"
    );
    assert!(
        errors.try_recv().is_err(),
        "on_error was called more than once"
    );

    // Now the slow client reads: an in-order prefix of the messages, then its end.
    let deadline = Instant::now() + DRAIN_DEADLINE;
    let mut drained = 0;
    let ending = loop {
        assert!(
            Instant::now() < deadline,
            "the slow client was not cut off within {DRAIN_DEADLINE:?} ({drained} messages)"
        );
        match slow.read() {
            Ok(Message::Text(text)) => {
                assert!(
                    text.as_str() == message(drained),
                    "the slow client got message {:?} where {drained} was due",
                    &text.as_str()[..5]
                );
                drained += 1;
            }
            Ok(Message::Close(frame)) => {
                let code = frame.map(|f| u16::from(f.code));
                assert_eq!(code, Some(1008), "the slow client's close code");
                break "close 1008";
            }
            Ok(other) => panic!("the slow client got {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the slow client's connection neither closed nor ended ({drained} messages)")
            }
            Err(_) => break "end of connection",
        }
    };
    assert!(
        drained < MESSAGES,
        "the slow client received all {MESSAGES} messages: it was never cut off ({ending})"
    );
    drop((slow, reader, sender));
    server.stop();
}
