//! Rooms span shards: with two shards and clients on both, a broadcast from a session on either shard, or
//! from `ServerHandle` on an outside thread, reaches every member on both shards exactly once and no
//! non-member; leaving a room or disconnecting stops delivery; one sender's broadcasts arrive in order;
//! two senders on different shards, sending at once, reach every member in one and the same order.
//!
//! Which shard a connection lands on is the kernel's `SO_REUSEPORT` hash, so the set-up opens clients
//! (each told its shard by `on_open`) until both shards have enough of them. A non-member is checked with a
//! marker: once every member has the broadcast, the non-member asks for a marker, which must be the next
//! thing it receives; the broadcast, had it been queued for it, would have come first.

mod common;
mod library;

use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;

use common::{connect, recv_text, send_text};
use library::start;
use roomcast::{RunningServer, Server, SessionId};
use tungstenite::WebSocket;

/// How many connections the set-up may open while looking for clients on both shards.
const MAX_CONNECTIONS: usize = 64;
/// How long to wait for an `on_close`.
const CALLBACK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A connected client and the shard its session lives on.
struct Client {
    ws: WebSocket<TcpStream>,
    shard: usize,
    /// The session's id, as `on_open` told it.
    id: u64,
    name: String,
}

impl Client {
    fn send(&mut self, text: &str) {
        send_text(&mut self.ws, text);
    }

    fn recv(&mut self) -> String {
        let text = recv_text(&mut self.ws);
        assert!(
            !text.starts_with("shard:"),
            "{}: unexpected {text:?}",
            self.name
        );
        text
    }

    fn join(&mut self, room: &str) {
        self.send(&format!(
            r#"{{"type":"join","payload":{{"room":"{room}"}}}}"#
        ));
        assert_eq!(self.recv(), format!("joined:{room}"), "{}", self.name);
    }

    fn leave(&mut self, room: &str) {
        self.send(&format!(
            r#"{{"type":"leave","payload":{{"room":"{room}"}}}}"#
        ));
        assert_eq!(self.recv(), format!("left:{room}"), "{}", self.name);
    }

    fn broadcast(&mut self, room: &str, text: &str) {
        self.send(&format!(
            r#"{{"type":"broadcast","payload":{{"room":"{room}","text":"{text}"}}}}"#
        ));
    }

    /// Asks for `marker` and checks that it is the next message: nothing was queued for us before it.
    fn expect_nothing_queued(&mut self, marker: &str) {
        self.send(&format!("echo:{marker}"));
        assert_eq!(
            self.recv(),
            marker,
            "{} received something before its marker",
            self.name
        );
    }
}

/// The test application: `on_open` tells the client its shard and session id; typed events join, leave and broadcast;
/// `echo:X` answers `X`. `on_close` reports session ids on the returned channel.
fn room_server() -> (RunningServer, Receiver<SessionId>) {
    let (closed_tx, closed_rx) = mpsc::channel();
    let closed_tx = Mutex::new(closed_tx);
    // Rate limits off: one sender's 100 broadcasts in a burst are about ordering, not about limits.
    let unlimited = [
        ("WEBSOCKET_RATE_LIMIT_MESSAGES", "0"),
        ("WEBSOCKET_RATE_LIMIT_BYTES", "0"),
    ];
    let server = start(&unlimited, move |s: Server| {
        s.on_open(|session| {
            session.send_text(&format!("shard:{} id:{}", session.shard(), session.id().0))
        })
        .on_close(move |session| {
            let _ = closed_tx.lock().unwrap().send(session.id());
        })
        .on_message(|session, text| {
            if let Some(marker) = text.strip_prefix("echo:") {
                session.send_text(marker);
            }
        })
        .on_typed_message(|session, kind, payload| {
            let field = |key: &str| payload.get(key).and_then(|v| v.as_str()).unwrap_or("");
            match kind {
                "join" => {
                    session
                        .join_room(field("room"))
                        .expect("no authorization hook");
                    session.send_text(&format!("joined:{}", field("room")));
                }
                "leave" => {
                    session.leave_room(field("room"));
                    session.send_text(&format!("left:{}", field("room")));
                }
                "broadcast" => session.broadcast_text_to_room(field("room"), field("text")),
                other => session.send_text(&format!("unexpected event {other}")),
            }
        })
    });
    (server, closed_rx)
}

/// Opens clients until each shard has `per_shard` of them (at most [`MAX_CONNECTIONS`] connections);
/// returns them grouped by shard, index 0 and 1. Extra clients are disconnected.
fn clients_on_both_shards(server: &RunningServer, per_shard: usize) -> [Vec<Client>; 2] {
    assert_eq!(
        server.handle().shard_count(),
        2,
        "the tests need two shards"
    );
    let mut by_shard: [Vec<Client>; 2] = [Vec::new(), Vec::new()];
    for n in 0..MAX_CONNECTIONS {
        if by_shard.iter().all(|c| c.len() >= per_shard) {
            break;
        }
        let mut ws = connect(server.websocket_addr());
        let hello = recv_text(&mut ws);
        let (shard, id): (usize, u64) = hello
            .strip_prefix("shard:")
            .and_then(|s| s.split_once(" id:"))
            .and_then(|(shard, id)| Some((shard.parse().ok()?, id.parse().ok()?)))
            .unwrap_or_else(|| panic!("on_open should send shard:N id:ID, sent {hello:?}"));
        assert!(shard < 2, "shard index {shard} out of range");
        if by_shard[shard].len() < per_shard {
            by_shard[shard].push(Client {
                ws,
                shard,
                id,
                name: format!("client {n} (shard {shard})"),
            });
        }
    }
    assert!(
        by_shard.iter().all(|c| c.len() >= per_shard),
        "after {MAX_CONNECTIONS} connections: {} on shard 0, {} on shard 1; the kernel never spread \
         connections over both shards",
        by_shard[0].len(),
        by_shard[1].len()
    );
    by_shard
}

/// Members of room `A` on both shards and one non-member on each.
struct Cluster {
    server: RunningServer,
    closed: Receiver<SessionId>,
    members: Vec<Client>,
    outsiders: Vec<Client>,
}

/// Two members and one non-member per shard.
fn cluster() -> Cluster {
    let (server, closed) = room_server();
    let [zero, one] = clients_on_both_shards(&server, 3);
    let (mut members, mut outsiders) = (Vec::new(), Vec::new());
    for group in [zero, one] {
        for (i, mut client) in group.into_iter().enumerate() {
            if i == 0 {
                outsiders.push(client);
            } else {
                client.join("A");
                members.push(client);
            }
        }
    }
    Cluster {
        server,
        closed,
        members,
        outsiders,
    }
}

/// Every client in `expected` receives `text` as its next message; everyone in `others` has nothing queued.
fn assert_delivered(expected: &mut [Client], others: &mut [Client], text: &str) {
    for client in expected.iter_mut() {
        assert_eq!(client.recv(), text, "{}", client.name);
    }
    // Every member on both shards has it, so both shards have delivered: anything for the others would be
    // queued ahead of their markers.
    for client in others.iter_mut() {
        client.expect_nothing_queued(&format!("marker after {text}"));
    }
}

#[test]
fn a_broadcast_from_either_shard_reaches_every_member_and_no_one_else() {
    let mut c = cluster();
    for shard in [0, 1] {
        let sender = c
            .members
            .iter()
            .position(|m| m.shard == shard)
            .expect("a member on each shard");
        let text = format!("hello from shard {shard}");
        c.members[sender].broadcast("A", &text);
        assert_delivered(&mut c.members, &mut c.outsiders, &text);
    }
    // Exactly once: a second copy would now be queued ahead of each member's marker.
    for member in c.members.iter_mut() {
        member.expect_nothing_queued("no duplicates");
    }
    drop(c.members);
    drop(c.outsiders);
    c.server.stop();
}

#[test]
fn leaving_a_room_stops_delivery() {
    let mut c = cluster();
    // One leaver per shard, so both the local and the cross-shard path are checked.
    let mut leavers = Vec::new();
    for shard in [0, 1] {
        let at = c.members.iter().position(|m| m.shard == shard).unwrap();
        let mut leaver = c.members.remove(at);
        leaver.leave("A");
        leavers.push(leaver);
    }
    c.members[0].broadcast("A", "after the leave");
    assert_delivered(&mut c.members, &mut leavers, "after the leave");
    assert_delivered(&mut [], &mut c.outsiders, "after the leave (outsiders)");
    drop((c.members, c.outsiders, leavers));
    c.server.stop();
}

#[test]
fn a_disconnected_session_is_no_longer_a_member() {
    let mut c = cluster();
    // One member per shard drops its connection; the broadcast waits until on_close has run for both
    // (the set-up's spare connections close too, so other ids may come first).
    let mut gone = Vec::new();
    for shard in [0, 1] {
        let at = c.members.iter().position(|m| m.shard == shard).unwrap();
        gone.push(c.members.remove(at).id);
    }
    let deadline = std::time::Instant::now() + CALLBACK_DEADLINE;
    while !gone.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let id = c
            .closed
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("on_close did not run for sessions {gone:?}"));
        gone.retain(|&g| g != id.0);
    }
    let remaining = c.members.len();
    assert_eq!(remaining, 2);
    c.members[1].broadcast("A", "after the disconnects");
    // Each remaining member gets exactly one copy (the marker comes next), the outsiders none.
    assert_delivered(&mut c.members, &mut c.outsiders, "after the disconnects");
    for member in c.members.iter_mut() {
        member.expect_nothing_queued("one copy only");
    }
    drop((c.members, c.outsiders));
    c.server.stop();
}

#[test]
fn a_server_handle_broadcast_reaches_members_on_both_shards() {
    let mut c = cluster();
    let handle = c.server.handle();
    // From a thread that is not a shard, as an application's other threads would.
    std::thread::spawn(move || handle.broadcast_text_to_room("A", "from outside"))
        .join()
        .unwrap();
    assert!(c.members.iter().any(|m| m.shard == 0) && c.members.iter().any(|m| m.shard == 1));
    assert_delivered(&mut c.members, &mut c.outsiders, "from outside");
    drop((c.members, c.outsiders));
    c.server.stop();
}

#[test]
fn one_senders_broadcasts_arrive_in_order_on_both_shards() {
    let mut c = cluster();
    for shard in [0, 1] {
        let sender = c.members.iter().position(|m| m.shard == shard).unwrap();
        for n in 0..100 {
            c.members[sender].broadcast("A", &format!("s{shard}-{n}"));
        }
        for member in c.members.iter_mut() {
            let got: Vec<String> = (0..100).map(|_| member.recv()).collect();
            let expected: Vec<String> = (0..100).map(|n| format!("s{shard}-{n}")).collect();
            assert_eq!(got, expected, "{}", member.name);
        }
    }
    drop((c.members, c.outsiders));
    c.server.stop();
}

#[test]
fn two_senders_on_different_shards_reach_every_member_in_one_order() {
    const EACH: usize = 200;
    let mut c = cluster();
    let senders: Vec<usize> = [0, 1]
        .iter()
        .map(|&shard| c.members.iter().position(|m| m.shard == shard).unwrap())
        .collect();
    // Both send as fast as they can, interleaved, without waiting for anything.
    for n in 0..EACH {
        for (i, &sender) in senders.iter().enumerate() {
            c.members[sender].broadcast("A", &format!("s{i}-{n}"));
        }
    }
    let orders: Vec<Vec<String>> = c
        .members
        .iter_mut()
        .map(|member| (0..2 * EACH).map(|_| member.recv()).collect())
        .collect();
    for (member, order) in c.members.iter().zip(&orders) {
        assert_eq!(
            order, &orders[0],
            "{} saw another order than {}",
            member.name, c.members[0].name
        );
    }
    // And each sender's messages keep the order it sent them in.
    for i in 0..2 {
        let prefix = format!("s{i}-");
        let own: Vec<&String> = orders[0]
            .iter()
            .filter(|m| m.starts_with(&prefix))
            .collect();
        let sent: Vec<String> = (0..EACH).map(|n| format!("s{i}-{n}")).collect();
        assert_eq!(own, sent.iter().collect::<Vec<_>>());
    }
    drop((c.members, c.outsiders));
    c.server.stop();
}
