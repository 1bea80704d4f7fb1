//! Several nodes through a real Redis (`CLUSTER_REDIS_URL`): two chat binaries on one machine and a
//! `redis-server` the tests start on a free port (Debian's, which `tests/run` installs).
//!
//! Checked: a node subscribes only to rooms it has members in (its bridge's counter and `PUBSUB NUMSUB`),
//! and rooms that come or go together share subscribe commands (`INFO commandstats`);
//! publications cross nodes in one order with Redis's offsets; a member recovers on another node; a
//! publish while Redis is down is refused with `unavailable`, and after Redis restarts (with its
//! append-only file) the room goes on without a gap; a killed subscriber connection loses nothing; the
//! clients of a node killed with SIGKILL recover a contiguous sequence on the other node; a node built on
//! the library that only publishes to a room receives none of it; and against a Redis Cluster of three
//! masters with a replica each (six `redis-server`s, `redis-cli --cluster create`), a `CLUSTER FAILOVER`
//! of the room's slot in the middle of a stream loses and repeats nothing. Presence spans nodes: each
//! node answers with every member and hears of other nodes' joins and leaves; a node that stops takes its
//! members out of Redis, one killed leaves them only until `CLUSTER_PRESENCE_TTL_MS` runs out. The
//! library's raw broadcasts (text and binary) reach a room's members on both nodes, once each.
//!
//! Nothing here sleeps to wait: waits are for events or states, with a deadline.

mod common;
mod library;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::v1::Client;
use common::{http_get, recv_text, scratch_dir, send_text, Launch};
use roomcast::{Ack, Joined, PublishOptions, RoomReplies};
use serde_json::{json, Value};
use tungstenite::Message;

const DEADLINE: Duration = Duration::from_secs(20);

/// A `redis-server` of the test's own on a free loopback port, persisting to `dir` (an append-only file,
/// fsynced on every write) so that a restart keeps the rooms' streams. Killed when dropped.
struct Redis {
    port: u16,
    dir: PathBuf,
    /// The port of its cluster bus, when it is a node of a Redis Cluster.
    cluster_bus: Option<u16>,
    child: Option<Child>,
}

impl Redis {
    fn start(name: &str) -> Redis {
        let mut redis = Redis::reserve(name);
        redis.run();
        redis
    }

    /// A port and a directory for it, not started yet.
    fn reserve(name: &str) -> Redis {
        Redis {
            port: free_port(),
            dir: scratch_dir(name),
            cluster_bus: None,
            child: None,
        }
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(self.cluster_bus.iter().flat_map(|bus| {
                [
                    "--cluster-enabled".to_owned(),
                    "yes".to_owned(),
                    "--cluster-port".to_owned(),
                    bus.to_string(),
                    "--cluster-node-timeout".to_owned(),
                    "2000".to_owned(),
                ]
            }))
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install Debian's redis-server (tests/run does)");
        self.child = Some(child);
        wait_until("redis-server answers PING", || {
            self.cli(&["PING"]).is_some_and(|out| out.trim() == "PONG")
        });
    }

    /// Stops it (SIGKILL: what the append-only file has, with fsync on every write, is everything).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against it; its output, or `None` when it could not connect.
    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// The channel of `room`, as Redis lists it (exactly one must match).
    fn channel_of(&self, room: &str) -> String {
        let out = self
            .cli(&["PUBSUB", "CHANNELS", &format!("roomcast:*:{room}")])
            .expect("redis answers");
        let channels: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(channels.len(), 1, "channels for {room}: {channels:?}");
        channels[0].to_owned()
    }

    /// `PUBSUB NUMSUB` of `room`'s channel.
    fn subscribers(&self, room: &str) -> u64 {
        let channel = self.channel_of(room);
        let out = self
            .cli(&["PUBSUB", "NUMSUB", &channel])
            .expect("redis answers");
        out.lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on now (the kernel's pick).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Redis Cluster of three masters, each with one replica: six `redis-server`s of the test's own.
struct RedisCluster {
    nodes: Vec<Redis>,
}

impl RedisCluster {
    fn start(name: &str) -> RedisCluster {
        let nodes: Vec<Redis> = (0..6)
            .map(|n| {
                let mut node = Redis::reserve(&format!("{name}-{n}"));
                node.cluster_bus = Some(free_port());
                node.run();
                node
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(created.success(), "redis-cli --cluster create");
        let cluster = RedisCluster { nodes };
        wait_until("three masters with a replica each, all in sync", || {
            cluster.nodes.iter().all(|node| {
                node.cli(&["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            }) && cluster
                .nodes
                .iter()
                .filter(|node| {
                    node.cli(&["INFO", "replication"])
                        .is_some_and(|info| info.contains("master_link_status:up"))
                })
                .count()
                == 3
        });
        cluster
    }

    fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port)
    }

    /// The node whose `ROLE` starts with `role` and that serves `room`'s slot (a master holds it, a
    /// replica copies the master that does).
    fn node_of(&self, room: &str, role: &str) -> &Redis {
        let channel = self
            .nodes
            .iter()
            .find_map(|node| {
                let out = node.cli(&["PUBSUB", "SHARDCHANNELS", &format!("roomcast:*:{room}")])?;
                out.lines().find(|l| !l.is_empty()).map(str::to_owned)
            })
            .expect("the room's sharded channel is subscribed on its master");
        let slot: u16 = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", &channel])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let master_id = self.nodes[0]
            .cli(&["CLUSTER", "NODES"])
            .unwrap()
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let serves = fields.get(8..)?.iter().any(|range| {
                    let (low, high) = range.split_once('-').unwrap_or((range, range));
                    matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(l), Ok(h)) if (l..=h).contains(&slot))
                });
                (fields[2].contains("master") && serves).then(|| fields[0].to_owned())
            })
            .expect("a master serves the slot");
        self.nodes
            .iter()
            .find(|node| {
                let Some(myself) = node.cli(&["CLUSTER", "MYID"]) else {
                    return false;
                };
                let Some(info) = node.cli(&["INFO", "replication"]) else {
                    return false;
                };
                let is_master = info.contains("role:master");
                match role {
                    "master" => is_master && myself.trim() == master_id,
                    _ => {
                        !is_master
                            && node
                                .cli(&["CLUSTER", "NODES"])
                                .unwrap()
                                .lines()
                                .any(|l| l.contains("myself") && l.contains(&master_id))
                    }
                }
            })
            .unwrap_or_else(|| panic!("the {role} of {room}'s slot"))
    }
}

/// Polls `done` (every 10 ms) until it holds, for at most [`DEADLINE`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "not within {DEADLINE:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A chat node sharing rooms through the Redis at `redis_url`, without rate limits (the tests publish in bursts).
fn node(redis_url: &str, data: &Path) -> common::App {
    node_with(redis_url, data, &[])
}

/// [`node`], with more settings.
fn node_with(redis_url: &str, data: &Path, settings: &[(&str, &str)]) -> common::App {
    Launch::new()
        .test_network()
        .envs(&[
            ("CLUSTER_REDIS_URL", redis_url),
            ("DATA_DIR", data.to_str().unwrap()),
            ("WEBSOCKET_RATE_LIMIT_MESSAGES", "0"),
        ])
        .envs(settings)
        .spawn()
}

/// `client`'s answer to `room.presence` for `room` (presence events that come before it are passed over:
/// when a node stops, its members' leaves may or may not be told before they are gone).
fn presence(client: &mut Client, room: &str) -> Value {
    let reference = client.request("room.presence", json!({ "room": room }));
    loop {
        let event = client.next();
        match event["type"].as_str() {
            Some("room.member_joined" | "room.member_left") => continue,
            _ => {
                assert_eq!(
                    (event["type"].as_str(), event["ref"].as_str()),
                    (Some("room.presence"), Some(reference.as_str())),
                    "{event}"
                );
                return event["payload"].clone();
            }
        }
    }
}

/// What a node's bridge counted (`/api/cluster`).
fn cluster_stats(app: &common::App) -> Value {
    let response = http_get(app.http_addr, "/api/cluster");
    let body: Value = serde_json::from_str(&response.text()).unwrap();
    body["cluster"].clone()
}

/// Waits for `client`'s next chat message and returns its payload.
fn next_message(client: &mut Client) -> Value {
    let event = client.next();
    assert_eq!(event["type"], "chat.message", "{event}");
    event["payload"].clone()
}

#[test]
fn a_node_gets_only_the_rooms_it_has_members_in_and_rooms_cross_nodes_in_one_order() {
    let redis = Redis::start("cluster-interest-redis");
    let a = node(&redis.url(), &scratch_dir("cluster-interest-a"));
    let b = node(&redis.url(), &scratch_dir("cluster-interest-b"));

    // "solo" has members on A only; "shared" on both.
    let mut solo = Client::connect(a.ws_addr);
    solo.join("solo", None);
    let mut on_a = Client::connect(a.ws_addr);
    on_a.join("shared", None);
    let mut on_b = Client::connect(b.ws_addr);
    on_b.join("shared", None);

    for i in 1..=20 {
        let (message, ack) = solo.say("solo", &format!("solo {i}"), None);
        assert_eq!(message["offset"], i);
        assert_eq!(ack["offset"], i);
    }
    for i in 1..=10 {
        let (message, _) = on_b.say("shared", &format!("shared {i}"), None);
        assert_eq!(message["offset"], i);
    }
    for i in 1..=10 {
        let message = next_message(&mut on_a);
        assert_eq!(message["text"], format!("shared {i}"));
        assert_eq!(
            message["offset"], i,
            "Redis's order and offsets on every node"
        );
    }

    assert_eq!(redis.subscribers("solo"), 1, "only A subscribes to solo");
    assert_eq!(redis.subscribers("shared"), 2);
    let stats_b = cluster_stats(&b);
    assert_eq!(
        stats_b["received"], 10,
        "B got shared's 10, none of solo's 20: {stats_b}"
    );
    assert_eq!(stats_b["published"], 10);
    wait_until("A has received all 30", || {
        cluster_stats(&a)["received"] == 30
    });

    // The last member of solo leaves: A unsubscribes once the linger is over.
    let reference = solo.request("room.leave", json!({ "room": "solo" }));
    solo.reply(&reference, "room.left");
    wait_until("solo has no subscriber", || {
        redis
            .cli(&["PUBSUB", "CHANNELS", "roomcast:*:solo"])
            .is_some_and(|out| out.trim().is_empty())
    });
}

#[test]
fn a_member_who_comes_back_on_another_node_recovers_what_it_missed() {
    let redis = Redis::start("cluster-recovery-redis");
    let a = node(&redis.url(), &scratch_dir("cluster-recovery-a"));
    let b = node(&redis.url(), &scratch_dir("cluster-recovery-b"));

    let mut publisher = Client::connect(a.ws_addr);
    publisher.join("news", None);
    let mut reader = Client::connect(a.ws_addr);
    let joined = reader.join("news", None);
    let epoch = joined["epoch"].clone();
    for i in 1..=2 {
        publisher.say("news", &format!("n{i}"), None);
        assert_eq!(next_message(&mut reader)["offset"], i);
    }
    drop(reader); // It goes away after offset 2 ...
    for i in 3..=5 {
        publisher.say("news", &format!("n{i}"), None);
    }
    // ... and comes back on the other node.
    let mut back = Client::connect(b.ws_addr);
    let joined = back.join("news", Some(&json!({ "offset": 2, "epoch": epoch })));
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(joined["epoch"], epoch, "one epoch on every node");
    let texts: Vec<&str> = joined["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["n3", "n4", "n5"]);
    assert_eq!(joined["offset"], 5);
    // And it is live from there.
    publisher.say("news", "n6", None);
    assert_eq!(next_message(&mut back)["offset"], 6);

    // A retried id is published once, whichever node it is retried on.
    let (message, ack) = publisher.say("news", "once", Some("id-1"));
    assert_eq!(
        (ack["offset"].as_u64(), ack["duplicate"].as_bool()),
        (Some(7), Some(false))
    );
    assert_eq!(message["offset"], 7);
    assert_eq!(next_message(&mut back)["offset"], 7);
    // An anonymous publisher's ids are the room's (see `Publication::by_user`): the same id from another
    // session on the other node is the same message.
    let reference = back.request(
        "chat.message",
        json!({ "room": "news", "text": "once", "id": "id-1" }),
    );
    let ack = back.reply(&reference, "ack");
    assert_eq!(
        (ack["offset"].as_u64(), ack["duplicate"].as_bool()),
        (Some(7), Some(true))
    );
}

#[test]
fn a_publish_while_redis_is_down_is_refused_and_a_restarted_redis_loses_nothing() {
    let mut redis = Redis::start("cluster-restart-redis");
    let a = node(&redis.url(), &scratch_dir("cluster-restart-a"));
    let b = node(&redis.url(), &scratch_dir("cluster-restart-b"));

    let mut member = Client::connect(a.ws_addr);
    member.join("ops", None);
    let mut publisher = Client::connect(b.ws_addr);
    publisher.join("ops", None);
    for i in 1..=3 {
        publisher.say("ops", &format!("before {i}"), None);
        assert_eq!(next_message(&mut member)["offset"], i);
    }

    redis.stop();
    let code = publisher.error_code("chat.message", json!({ "room": "ops", "text": "lost?" }));
    assert_eq!(code, "unavailable");

    redis.run();
    for app in [&a, &b] {
        wait_until("the node is linked again", || {
            cluster_stats(app)["linked"] == true
        });
    }
    // The epoch and the offsets survived the restart: the room goes on at 4.
    let (message, ack) = publisher.say("ops", "after", None);
    assert_eq!(message["offset"], 4, "{message}");
    assert_eq!(ack["offset"], 4);
    let message = next_message(&mut member);
    assert_eq!(
        (message["offset"].as_u64(), message["text"].as_str()),
        (Some(4), Some("after"))
    );
}

#[test]
fn a_killed_subscriber_connection_loses_nothing() {
    let redis = Redis::start("cluster-kill-redis");
    let a = node(&redis.url(), &scratch_dir("cluster-kill-a"));
    let b = node(&redis.url(), &scratch_dir("cluster-kill-b"));

    let mut member = Client::connect(a.ws_addr);
    member.join("feed", None);
    let mut publisher = Client::connect(b.ws_addr);
    publisher.join("feed", None);

    const TOTAL: u64 = 300;
    let channel = redis.channel_of("feed");
    let mut killed = 0;
    for i in 1..=TOTAL {
        // Sent without waiting for each to come back, so publications are in flight when the
        // subscriber connections drop.
        publisher.request(
            "chat.message",
            json!({ "room": "feed", "text": format!("f{i}") }),
        );
        if i % 100 == 50 {
            // Every node's subscriber connection dropped mid-stream; they reconnect and catch up.
            let out = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
            killed += out.trim().parse::<u64>().unwrap_or(0);
            // Both back before the next kill, so that each kill finds them.
            wait_until("both subscribers reconnected", || {
                redis
                    .cli(&["PUBSUB", "NUMSUB", &channel])
                    .and_then(|out| out.lines().nth(1).map(|n| n.trim() == "2"))
                    .unwrap_or(false)
            });
        }
    }
    assert!(
        killed >= 4,
        "both nodes' subscribers were killed, twice or more ({killed})"
    );
    for i in 1..=TOTAL {
        let message = next_message(&mut member);
        assert_eq!(message["offset"], i, "contiguous, no repeat: {message}");
    }
}

#[test]
fn a_room_whose_history_redis_lost_starts_a_new_epoch_that_every_member_gets() {
    let redis = Redis::start("cluster-epoch-redis");
    let a = node(&redis.url(), &scratch_dir("cluster-epoch-a"));
    let b = node(&redis.url(), &scratch_dir("cluster-epoch-b"));

    let mut member = Client::connect(a.ws_addr);
    let first_epoch = member.join("reset", None)["epoch"].clone();
    let mut publisher = Client::connect(b.ws_addr);
    publisher.join("reset", None);
    for i in 1..=3 {
        publisher.say("reset", &format!("old {i}"), None);
        assert_eq!(next_message(&mut member)["offset"], i);
    }
    redis.cli(&["FLUSHALL"]).unwrap();
    let (message, ack) = publisher.say("reset", "new 1", None);
    assert_eq!(message["offset"], 1, "{message}");
    assert_ne!(ack["epoch"], first_epoch, "a new epoch");
    let message = next_message(&mut member);
    assert_eq!(
        (message["offset"].as_u64(), message["text"].as_str()),
        (Some(1), Some("new 1")),
        "the member on the other node gets the new epoch's first publication"
    );
    assert_eq!(message["epoch"], ack["epoch"]);
    publisher.say("reset", "new 2", None);
    assert_eq!(next_message(&mut member)["offset"], 2);
}

#[test]
fn a_node_started_before_redis_joins_the_cluster_once_redis_is_up() {
    let mut redis = Redis::reserve("cluster-late-redis");
    let a = node(&redis.url(), &scratch_dir("cluster-late-a"));
    // A join made while Redis is down waits for the room's stream ...
    let mut early = Client::connect(a.ws_addr);
    let reference = early.request("room.join", json!({ "room": "late" }));
    redis.run();
    // ... and is answered once the node has reached Redis.
    let joined = early.reply(&reference, "room.joined");
    assert_eq!(joined["offset"], 0, "{joined}");

    let b = node(&redis.url(), &scratch_dir("cluster-late-b"));
    let mut on_b = Client::connect(b.ws_addr);
    on_b.join("late", None);
    on_b.say("late", "hello", None);
    assert_eq!(next_message(&mut early)["text"], "hello");
}

#[test]
fn clients_of_a_killed_node_reconnect_to_another_and_get_a_contiguous_sequence() {
    let redis = Redis::start("cluster-kill9-redis");
    let mut a = node(&redis.url(), &scratch_dir("cluster-kill9-a"));
    let b = node(&redis.url(), &scratch_dir("cluster-kill9-b"));

    let mut publisher = Client::connect(b.ws_addr);
    publisher.join("live", None);
    let mut members: Vec<Client> = (0..3).map(|_| Client::connect(a.ws_addr)).collect();
    let mut positions = Vec::new();
    for member in &mut members {
        let joined = member.join("live", None);
        positions.push((0u64, joined["epoch"].as_str().unwrap().to_owned()));
    }
    for i in 1..=10 {
        publisher.say("live", &format!("l{i}"), None);
    }
    // Each member has read a different amount when its node dies.
    for (n, member) in members.iter_mut().enumerate() {
        for _ in 0..(3 + 3 * n) {
            positions[n].0 = next_message(member)["offset"].as_u64().unwrap();
        }
    }
    a.signal(libc::SIGKILL);
    a.wait_exit();
    for i in 11..=15 {
        publisher.say("live", &format!("l{i}"), None);
    }

    // They come back on B, live in the room (its log is in memory), or on a node that started after
    // (what they missed is read from Redis's stream), while the publisher goes on.
    let c = node(&redis.url(), &scratch_dir("cluster-kill9-c"));
    let mut back = Vec::new();
    for (n, (offset, epoch)) in positions.into_iter().enumerate() {
        let to = if n == 1 { c.ws_addr } else { b.ws_addr };
        let mut client = Client::connect(to);
        let joined = client.join("live", Some(&json!({ "offset": offset, "epoch": epoch })));
        assert_eq!(joined["recovered"], true, "{joined}");
        let offsets: Vec<u64> = joined["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect();
        let next = 16 + n as u64;
        publisher.say("live", &format!("l{next}"), None);
        back.push((client, offset, offsets));
    }
    // Each gets every offset after its own once, in order: the recovery, then what followed live.
    for (mut client, offset, mut offsets) in back {
        while offsets.last() != Some(&18) {
            offsets.push(next_message(&mut client)["offset"].as_u64().unwrap());
        }
        assert_eq!(
            offsets,
            ((offset + 1)..=18).collect::<Vec<_>>(),
            "from {offset}"
        );
    }
}

#[test]
fn a_failover_in_a_redis_cluster_loses_nothing() {
    let cluster = RedisCluster::start("cluster-failover");
    let a = node(&cluster.url(), &scratch_dir("cluster-failover-a"));
    let b = node(&cluster.url(), &scratch_dir("cluster-failover-b"));

    let mut member = Client::connect(a.ws_addr);
    member.join("orders", None);
    let mut publisher = Client::connect(b.ws_addr);
    publisher.join("orders", None);

    const TOTAL: u64 = 300;
    const FAILOVER_AT: u64 = 100;
    let send = |publisher: &mut Client, i: u64| {
        // With the client's id: a publish refused as `unavailable` is sent again, and Redis keeps it once.
        publisher.request(
            "chat.message",
            json!({ "room": "orders", "text": format!("o{i}"), "id": format!("o{i}") }),
        )
    };
    let mut pending = HashMap::new();
    for i in 1..=TOTAL {
        // Sent without waiting for each to come back, so publications are in flight during the failover.
        pending.insert(send(&mut publisher, i), i);
        if i == FAILOVER_AT {
            let replica = cluster.node_of("orders", "replica");
            assert_eq!(replica.cli(&["CLUSTER", "FAILOVER"]).unwrap().trim(), "OK");
            wait_until("the replica took over the room's slot", || {
                replica
                    .cli(&["ROLE"])
                    .is_some_and(|role| role.starts_with("master"))
            });
        }
    }
    let (mut resent, deadline) = (0, Instant::now() + DEADLINE);
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "unanswered: {pending:?}");
        let event = publisher.next();
        let Some(reference) = event["ref"].as_str() else {
            continue; // The publisher's own copy of a publication.
        };
        let i = pending
            .remove(reference)
            .expect("a reply to a pending publish");
        match event["type"].as_str() {
            Some("ack") => {}
            Some("error") if event["payload"]["code"] == "unavailable" => {
                resent += 1;
                pending.insert(send(&mut publisher, i), i);
            }
            _ => panic!("unexpected {event}"),
        }
    }

    let mut texts = HashSet::new();
    for offset in 1..=TOTAL {
        let message = next_message(&mut member);
        assert_eq!(message["offset"], offset, "contiguous: {message}");
        assert!(
            texts.insert(message["text"].as_str().unwrap().to_owned()),
            "no repeat: {message}"
        );
    }
    assert_eq!(
        texts.len() as u64,
        TOTAL,
        "every publication, once ({resent} resent)"
    );
    // Nothing more is coming: a last publication is the next one the member gets.
    let (last, _) = publisher.say("orders", "last", None);
    assert_eq!(last["offset"], TOTAL + 1);
    assert_eq!(next_message(&mut member)["offset"], TOTAL + 1);
}

/// A backend's view of a room: what the test's library node tells a publisher once Redis has its message.
struct PublishedReplies;

impl RoomReplies for PublishedReplies {
    fn ack(&self, _subprotocol: Option<&str>, ack: &Ack) -> Option<String> {
        Some(format!("published {} {}", ack.room, ack.offset))
    }
}

#[test]
fn a_node_that_only_publishes_to_a_room_receives_none_of_it() {
    let redis = Redis::start("cluster-publisher-redis");
    let a = node(&redis.url(), &scratch_dir("cluster-publisher-a"));
    // B is a node built on the library whose clients publish to rooms they are not in, as a backend
    // sending notifications would: "<room> <text>".
    let b = library::start(&[("CLUSTER_REDIS_URL", &redis.url())], |server| {
        server
            .room_replies(PublishedReplies)
            .on_message(|session, text| {
                if let Some((room, text)) = text.split_once(' ') {
                    session.publish(room, text, PublishOptions::default());
                }
            })
    });

    let mut members: Vec<Client> = (0..3).map(|_| Client::connect(a.ws_addr)).collect();
    for member in &mut members {
        member.join("alerts", None);
    }
    let mut backend = common::connect(b.websocket_addr());
    const TOTAL: u64 = 50;
    for i in 1..=TOTAL {
        send_text(&mut backend, &format!("alerts alert {i}"));
        assert_eq!(recv_text(&mut backend), format!("published alerts {i}"));
    }
    for member in &mut members {
        for i in 1..=TOTAL {
            let message = next_message(member);
            assert_eq!(
                (message["offset"].as_u64(), message["text"].as_str()),
                (Some(i), Some(format!("alert {i}").as_str())),
                "{message}"
            );
        }
    }

    let stats = b.handle().cluster_stats().expect("B is clustered");
    assert_eq!(stats.published, TOTAL);
    assert_eq!(
        stats.received, 0,
        "B has no member in alerts: nothing comes back to it"
    );
    assert_eq!(redis.subscribers("alerts"), 1, "only A subscribes");
    wait_until("A received all", || cluster_stats(&a)["received"] == TOTAL);
    b.stop();
}

#[test]
fn presence_spans_nodes_and_a_dead_nodes_members_leave_it_within_the_ttl() {
    let redis = Redis::start("cluster-presence-redis");
    let settings = [
        ("PRESENCE_EVENTS", "true"),
        ("CLUSTER_PRESENCE_TTL_MS", "3000"),
    ];
    let mut a = node_with(&redis.url(), &scratch_dir("cluster-presence-a"), &settings);
    let b = node_with(&redis.url(), &scratch_dir("cluster-presence-b"), &settings);

    let mut on_b = Client::connect(b.ws_addr);
    on_b.join("lobby", None);
    let mut on_a: Vec<Client> = (0..2).map(|_| Client::connect(a.ws_addr)).collect();
    for member in &mut on_a {
        member.join("lobby", None);
    }
    // B's member hears of each of A's, named with their node: their session ids are A's.
    let mut a_node = None;
    for member in &on_a {
        let event = on_b.next();
        assert_eq!(event["type"], "room.member_joined", "{event}");
        assert_eq!(event["payload"]["session"], member.session.as_str());
        let node = event["payload"]["node"]
            .as_str()
            .expect("another node's member")
            .to_owned();
        assert_eq!(*a_node.get_or_insert_with(|| node.clone()), node);
    }
    let a_node = a_node.unwrap();
    // (A's first member heard of A's second, from A itself.)
    assert_eq!(on_a[0].next()["type"], "room.member_joined");

    // Each node answers with every member: its own without a node, the other's with it.
    let members = |presence: &Value| -> HashSet<(String, Option<String>)> {
        presence["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let node = m["node"].as_str().map(str::to_owned);
                (m["session"].as_str().unwrap().to_owned(), node)
            })
            .collect()
    };
    let from_b = presence(&mut on_b, "lobby");
    assert_eq!(from_b["count"], 3, "{from_b}");
    let expected: HashSet<_> = on_a
        .iter()
        .map(|m| (m.session.clone(), Some(a_node.clone())))
        .chain([(on_b.session.clone(), None)])
        .collect();
    assert_eq!(members(&from_b), expected);
    let from_a = presence(&mut on_a[0], "lobby");
    assert_eq!(from_a["count"], 3, "{from_a}");
    let b_entry = members(&from_a)
        .into_iter()
        .find(|(session, node)| *session == on_b.session && node.is_some());
    assert!(
        b_entry.is_some_and(|(_, node)| node.unwrap() != a_node),
        "{from_a}"
    );

    // A member who leaves is told to the other node and gone from its presence.
    let leaving = on_a.pop().unwrap();
    let gone = leaving.session.clone();
    drop(leaving);
    let event = on_b.next();
    assert_eq!(
        (event["type"].as_str(), event["payload"]["session"].as_str()),
        (Some("room.member_left"), Some(gone.as_str())),
        "{event}"
    );
    assert_eq!(presence(&mut on_b, "lobby")["count"], 2);

    // A node that stops takes its members out of Redis as it goes.
    let mut c = node_with(&redis.url(), &scratch_dir("cluster-presence-c"), &settings);
    let mut on_c = Client::connect(c.ws_addr);
    on_c.join("lobby", None);
    assert_eq!(on_b.next()["type"], "room.member_joined");
    assert_eq!(presence(&mut on_b, "lobby")["count"], 3);
    c.terminate();
    let key = format!("{}:presence", redis.channel_of("lobby"));
    let entries = redis.cli(&["ZRANGE", &key, "0", "-1"]).unwrap();
    assert_eq!(
        entries.lines().filter(|l| !l.is_empty()).count(),
        2,
        "{entries}"
    );

    // A node that dies has nobody to take its members out: they expire within the TTL.
    a.signal(libc::SIGKILL);
    a.wait_exit();
    wait_until("A's member expired from the presence B answers", || {
        presence(&mut on_b, "lobby")["count"] == 1
    });
    assert_eq!(
        members(&presence(&mut on_b, "lobby")),
        HashSet::from([(on_b.session.clone(), None)])
    );
}

/// What the raw-broadcast test's library nodes tell a session once its join is done.
struct JoinedReplies;

impl RoomReplies for JoinedReplies {
    fn joined(&self, _subprotocol: Option<&str>, joined: &Joined) -> Option<String> {
        Some(format!("joined {}", joined.room))
    }
}

#[test]
fn raw_broadcasts_reach_the_rooms_members_on_every_node_once() {
    let redis = Redis::start("cluster-raw-redis");
    // Library nodes whose sessions send "join <room>", and whose other messages are raw broadcasts to
    // "r" (no offset, no history: `broadcast_*_to_room`).
    let start = || {
        library::start(&[("CLUSTER_REDIS_URL", &redis.url())], |server| {
            server
                .room_replies(JoinedReplies)
                .on_message(|session, text| match text.strip_prefix("join ") {
                    Some(room) => session.join_room(room).expect("a room's name"),
                    None => session.broadcast_text_to_room("r", text),
                })
                .on_binary(|session, data| session.broadcast_binary_to_room("r", data))
        })
    };
    let (a, b) = (start(), start());
    let mut on_a = common::connect(a.websocket_addr());
    let mut on_b = common::connect(b.websocket_addr());
    for member in [&mut on_a, &mut on_b] {
        send_text(member, "join r");
        assert_eq!(recv_text(member), "joined r");
    }

    const TEXTS: usize = 20;
    for i in 0..TEXTS {
        send_text(&mut on_b, &format!("hello {i}"));
    }
    let binary = vec![0u8, 1, 2, 255];
    on_b.send(Message::binary(binary.clone())).unwrap();
    // Each node's members get it once, in the order it was sent: B's at once, A's through Redis.
    for member in [&mut on_a, &mut on_b] {
        for i in 0..TEXTS {
            assert_eq!(recv_text(member), format!("hello {i}"));
        }
        match member.read().unwrap() {
            Message::Binary(data) => assert_eq!(&data[..], &binary[..]),
            other => panic!("expected the binary broadcast, got {other:?}"),
        }
    }
    // And the other way; had B's own broadcasts come back to it from Redis, B would read one of them here.
    send_text(&mut on_a, "from a");
    assert_eq!(recv_text(&mut on_b), "from a");
    assert_eq!(recv_text(&mut on_a), "from a");

    // Received counts are in before delivery; a publish is counted once Redis answered it.
    let stats = |node: &roomcast::RunningServer| node.handle().cluster_stats().unwrap();
    assert_eq!(
        (stats(&a).received, stats(&b).received),
        (TEXTS as u64 + 1, 1)
    );
    wait_until("both nodes' publishes counted", || {
        (stats(&a).published, stats(&b).published) == (1, TEXTS as u64 + 1)
    });
    a.stop();
    b.stop();
}

/// `calls` of `command` in Redis's `INFO commandstats`.
fn command_calls(redis: &Redis, command: &str) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[test]
fn rooms_that_come_and_go_together_share_subscribe_commands() {
    let redis = Redis::start("cluster-batch-redis");
    let a = node_with(
        &redis.url(),
        &scratch_dir("cluster-batch-a"),
        &[("CLUSTER_UNSUBSCRIBE_LINGER_MS", "100")],
    );
    redis.cli(&["CONFIG", "RESETSTAT"]).unwrap();

    // One client asks for 40 rooms without waiting: the joins reach the bridge together.
    const ROOMS: usize = 40;
    let mut client = Client::connect(a.ws_addr);
    for i in 0..ROOMS {
        client.request("room.join", json!({ "room": format!("batch-{i}") }));
    }
    let mut joined = HashSet::new();
    while joined.len() < ROOMS {
        let event = client.next();
        assert_eq!(event["type"], "room.joined", "{event}");
        joined.insert(event["payload"]["room"].as_str().unwrap().to_owned());
    }
    for i in 0..ROOMS {
        assert_eq!(redis.subscribers(&format!("batch-{i}")), 1);
    }
    let subscribes = command_calls(&redis, "subscribe");
    // Not one per room: every join would have to reach the bridge alone for that.
    assert!(
        (1..ROOMS as u64).contains(&subscribes),
        "{subscribes} SUBSCRIBE for {ROOMS} rooms"
    );

    // Its leaving releases them all at once: after the linger they go in shared commands too.
    drop(client);
    wait_until("every room unsubscribed", || {
        redis
            .cli(&["PUBSUB", "CHANNELS", "roomcast:*"])
            .is_some_and(|out| out.trim().is_empty())
    });
    let unsubscribes = command_calls(&redis, "unsubscribe");
    assert!(
        (1..ROOMS as u64).contains(&unsubscribes),
        "{unsubscribes} UNSUBSCRIBE for {ROOMS} rooms"
    );
}

/// The server API on a node with no member in the room: the publish goes through Redis (its offset in
/// the answer), the member on the other node gets it, and the room's presence lists that member with its
/// node.
#[test]
fn the_server_api_publishes_into_a_room_of_another_node() {
    const KEY: &str = "cluster-api-key-0123456789";
    let redis = Redis::start("cluster-api-redis");
    let a = node(&redis.url(), &scratch_dir("cluster-api-a"));
    let b = node_with(
        &redis.url(),
        &scratch_dir("cluster-api-b"),
        &[("API_KEY", KEY)],
    );
    let mut member = Client::connect(a.ws_addr);
    member.join("alerts", None);
    let curl = |args: &[&str], path: &str| -> Value {
        let output = Command::new("curl")
            .args(["-s", "-S", "--max-time", "10", "-H"])
            .arg(format!("Authorization: Bearer {KEY}"))
            .args(args)
            .arg(format!("{}{path}", b.http_url()))
            .output()
            .expect("curl");
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let ack = curl(
        &["-d", r#"{"room":"alerts","text":"disk full"}"#],
        "/api/publish",
    );
    assert_eq!(ack["offset"], 1, "{ack}");
    let message = next_message(&mut member);
    assert_eq!(
        (message["offset"].as_u64(), message["text"].as_str()),
        (Some(1), Some("disk full"))
    );
    assert_eq!(message["from"], "server");
    let room = curl(&[], "/api/rooms/alerts");
    assert_eq!(room["members"], 1, "{room}");
    assert!(
        room["presence"][0]["node"].is_string(),
        "A's member, named with its node: {room}"
    );
}
