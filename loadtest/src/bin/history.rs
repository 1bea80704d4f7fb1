//! `history`: what room history costs, measured through the chat app's `roomcast.v1` dialect.
//!
//! - `appends`: publishers, each in a room of its own, keep a window of `chat.message`s in flight; an ack
//!   comes once the message is in the room's stream (and, with history on, written to the store), so
//!   acks per second are the appends per second the server sustains end to end.
//! - `recovery`: fills one room, then joins it again and again with `since` = (newest - 300, epoch) and
//!   times each `room.joined` carrying the 300 missed messages: p50 / p99 / max.
//! - `fill`: publishes `--per-room` messages into each of `--rooms` rooms (a session joins at most 63 of
//!   them), then prints the server's RSS (`--server-pid`).
//!
//! Blocking tungstenite clients, one thread each: these runs measure the server's store path, not many
//! connections (the main harness does that). Only loopback targets (the harness's own guard), every run
//! bounded in messages and time. The server must run with the rate limits off.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use loadtest::Target;
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// The longest any one read may wait before the run fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
struct Args {
    /// The server; only ws:// on 127.0.0.0/8 or [::1].
    #[arg(long, default_value = "ws://127.0.0.1:9090/")]
    url: String,
    /// The server's process id, for its RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(subcommand)]
    run: Run,
}

#[derive(Subcommand)]
enum Run {
    /// Publishers with a window of messages in flight, each in its own room; acks per second.
    Appends {
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Seconds (at most 60).
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// Joins with `since` that each recover `--missed` messages.
    Recovery {
        #[arg(long, default_value_t = 300)]
        missed: u64,
        #[arg(long, default_value_t = 1000)]
        joins: usize,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// `--per-room` messages into each of `--rooms` rooms, then the server's RSS.
    Fill {
        #[arg(long, default_value_t = 10_000)]
        rooms: usize,
        #[arg(long, default_value_t = 1000)]
        per_room: usize,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
}

/// A blocking `roomcast.v1` client.
struct Client {
    ws: WebSocket<TcpStream>,
    refs: u64,
}

impl Client {
    fn connect(target: &Target) -> Client {
        let stream = TcpStream::connect(target.addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let url = format!("ws://{}{}", target.host_header, target.path);
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "roomcast.v1".parse().unwrap());
        let (ws, _) = tungstenite::client(request, stream).expect("upgrade");
        let mut client = Client { ws, refs: 0 };
        assert_eq!(client.next()["type"], "welcome");
        client
    }

    fn next(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read") {
                Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
                Message::Close(frame) => panic!("closed by the server: {frame:?}"),
                _ => continue,
            }
        }
    }

    fn send(&mut self, kind: &str, payload: Value) {
        self.refs += 1;
        let event = json!({ "type": kind, "ref": self.refs.to_string(), "payload": payload });
        self.ws
            .send(Message::text(event.to_string()))
            .expect("send");
    }

    /// Joins `room` and returns its `room.joined` payload.
    fn join(&mut self, room: &str, since: Option<Value>) -> Value {
        let mut payload = json!({ "room": room });
        if let Some(since) = since {
            payload["since"] = since;
        }
        self.send("room.join", payload);
        loop {
            let event = self.next();
            match event["type"].as_str() {
                Some("room.joined") => return event["payload"].clone(),
                Some("error") => panic!("join refused: {event}"),
                _ => continue,
            }
        }
    }

    /// Publishes `count` messages round-robin over `rooms` with `window` in flight; returns the acks.
    fn publish(
        &mut self,
        rooms: &[String],
        count: usize,
        window: usize,
        text: &str,
        until: Instant,
    ) -> usize {
        let (mut sent, mut acked) = (0, 0);
        while acked < count && Instant::now() < until {
            while sent < count && sent - acked < window {
                let room = &rooms[sent % rooms.len()];
                self.send("chat.message", json!({ "room": room, "text": text }));
                sent += 1;
            }
            let event = self.next();
            match event["type"].as_str() {
                Some("ack") => acked += 1,
                Some("error") => panic!("publish refused (rate limits off?): {event}"),
                _ => {}
            }
        }
        acked
    }
}

fn rss_mb(pid: Option<u32>) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let args = Args::parse();
    let target = Target::parse(&args.url).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    match args.run {
        Run::Appends {
            publishers,
            window,
            duration,
            size,
        } => {
            let text = "x".repeat(size);
            let until = Instant::now() + Duration::from_secs(duration.min(60));
            let started = Instant::now();
            let threads: Vec<_> = (0..publishers)
                .map(|i| {
                    let (target, text) = (target.clone(), text.clone());
                    std::thread::spawn(move || {
                        let mut client = Client::connect(&target);
                        let rooms = vec![format!("appends-{i}")];
                        client.join(&rooms[0], None);
                        client.publish(&rooms, usize::MAX, window, &text, until)
                    })
                })
                .collect();
            let acked: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "appends: {acked} acked in {secs:.1} s = {:.0}/s ({publishers} publishers, window {window}, {size} B)",
                acked as f64 / secs
            );
        }
        Run::Recovery {
            missed,
            joins,
            size,
        } => {
            let mut writer = Client::connect(&target);
            let rooms = vec!["recovery".to_owned()];
            writer.join(&rooms[0], None);
            let far = Instant::now() + Duration::from_secs(120);
            writer.publish(&rooms, 1000, 64, &"r".repeat(size), far);
            let mut reader = Client::connect(&target);
            let joined = reader.join(&rooms[0], None);
            let (top, epoch) = (joined["offset"].as_u64().unwrap(), joined["epoch"].clone());
            let since = json!({ "offset": top.saturating_sub(missed), "epoch": epoch });
            let mut micros = Histogram::<u64>::new(3).unwrap();
            for _ in 0..joins.min(100_000) {
                let started = Instant::now();
                let back = reader.join(&rooms[0], Some(since.clone()));
                micros.record(started.elapsed().as_micros() as u64).unwrap();
                assert_eq!(back["recovered"], true, "{back}");
                assert_eq!(
                    back["publications"].as_array().unwrap().len() as u64,
                    missed
                );
            }
            println!(
                "recovery of {missed} messages of {size} B: {joins} joins, p50 {} µs, p99 {} µs, max {} µs",
                micros.value_at_quantile(0.5),
                micros.value_at_quantile(0.99),
                micros.max()
            );
        }
        Run::Fill {
            rooms,
            per_room,
            size,
        } => {
            const ROOMS_PER_SESSION: usize = 63;
            let started = Instant::now();
            let before = rss_mb(args.server_pid);
            let names: Vec<String> = (0..rooms).map(|r| format!("fill-{r:05}")).collect();
            let threads: Vec<_> = names
                .chunks(ROOMS_PER_SESSION)
                .map(|chunk| {
                    let (target, chunk) = (target.clone(), chunk.to_vec());
                    let text = "f".repeat(size);
                    std::thread::spawn(move || {
                        let mut client = Client::connect(&target);
                        for room in &chunk {
                            client.join(room, None);
                        }
                        let far = Instant::now() + Duration::from_secs(1800);
                        client.publish(&chunk, chunk.len() * per_room, 32, &text, far)
                    })
                })
                .collect();
            let acked: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            println!(
                "fill: {acked} messages in {rooms} rooms in {:.0} s; server RSS {:?} MB before, {:?} MB after",
                started.elapsed().as_secs_f64(),
                before,
                rss_mb(args.server_pid)
            );
        }
    }
}
