//! The scenarios, their parameters and bounds, and the plan each one turns into.
//!
//! Owns what each scenario means (who joins which room, who publishes, how fast, for how long), the
//! hard caps every run is held to, and spreading connections over 127.0.0.x source addresses when one
//! address has too few ephemeral ports. It does not run anything (see `runner`, `smoke`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::Serialize;

use crate::plan::{ClientPlan, Pacing, Plan, RoomPlan, MAX_CONNECTIONS, MAX_DURATION};
use crate::report::Report;
use crate::runner::{self, Observe};
use crate::smoke;
use crate::target::{Target, TargetError};

/// A load scenario and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "scenario", rename_all = "lowercase")]
pub enum Scenario {
    /// The protocol, reply by reply, on two connections.
    Smoke,
    /// Open `connections`, hold them `hold`, then check that `sample` of them still answer `ping`.
    Conns {
        /// Connections to open and hold.
        connections: usize,
        /// How long to hold them.
        #[serde(with = "seconds")]
        hold: Duration,
        /// How many, spread evenly, must answer `ping` afterwards.
        sample: usize,
    },
    /// One publisher sends `messages` at `rate` per second to `members` in one room.
    Fanout {
        /// Receiving members (the publisher is not one of them).
        members: usize,
        /// Messages per second.
        rate: f64,
        /// Messages to send.
        messages: u64,
        /// Chat text bytes.
        size: usize,
    },
    /// One publisher keeps `window` messages in flight to `members` in one room for `duration`.
    Saturate {
        /// Receiving members.
        members: usize,
        /// Messages in flight: sent but not yet delivered to every member.
        window: u64,
        /// How long.
        #[serde(with = "seconds")]
        duration: Duration,
        /// Chat text bytes.
        size: usize,
    },
    /// `clients` spread over `rooms`, each publishing `rate` messages per second for `duration`.
    Rooms {
        /// Clients, each a publisher and a member.
        clients: usize,
        /// Rooms (client i joins room i mod rooms).
        rooms: usize,
        /// Messages per second per client.
        rate: f64,
        /// How long.
        #[serde(with = "seconds")]
        duration: Duration,
        /// Chat text bytes.
        size: usize,
    },
    /// `rooms` traffic plus `churners` that connect, join, send, leave and disconnect over and over.
    Churn {
        /// Steady clients, as in `rooms`; only their receipts are checked.
        clients: usize,
        /// Rooms.
        rooms: usize,
        /// Messages per second per steady client.
        rate: f64,
        /// Clients cycling through whole sessions.
        churners: usize,
        /// How long.
        #[serde(with = "seconds")]
        duration: Duration,
        /// Chat text bytes.
        size: usize,
    },
    /// `churn` for a long `duration`, with the server's RSS tracked from the run's start to after every
    /// client is gone: does memory come back once the sessions that used it have ended?
    Soak {
        /// Steady clients, as in `churn`.
        clients: usize,
        /// Rooms.
        rooms: usize,
        /// Messages per second per steady client.
        rate: f64,
        /// Clients cycling through whole sessions.
        churners: usize,
        /// How long.
        #[serde(with = "seconds")]
        duration: Duration,
        /// Chat text bytes.
        size: usize,
    },
}

mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl Scenario {
    /// The scenario's name on the command line and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Smoke => "smoke",
            Scenario::Conns { .. } => "conns",
            Scenario::Fanout { .. } => "fanout",
            Scenario::Saturate { .. } => "saturate",
            Scenario::Rooms { .. } => "rooms",
            Scenario::Churn { .. } => "churn",
            Scenario::Soak { .. } => "soak",
        }
    }
}

/// Where and how to run a scenario.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The server, `ws://` on a loopback address.
    pub url: String,
    /// Driver threads.
    pub threads: usize,
    /// The server process, for RSS and CPU.
    pub server_pid: Option<u32>,
    /// More nodes of the same server (a cluster): clients are spread over `url` and these in turn.
    pub also_urls: Vec<String>,
    /// Their processes: RSS and CPU are summed over `server_pid` and these.
    pub also_server_pids: Vec<u32>,
    /// Draw progress bars.
    pub progress: bool,
    /// Set-up deadline.
    pub setup_timeout: Duration,
    /// Drain deadline.
    pub drain_timeout: Duration,
    /// Connections in set-up at once per thread.
    pub connect_window: usize,
    /// Offer permessage-deflate in every upgrade; a connection the server answers without it fails
    /// set-up (`deflate_refused`), so the run fails rather than measure plain frames.
    pub deflate: bool,
}

impl RunOptions {
    /// Defaults for `url`: one thread, no server sampling, no progress bars, no compression offered.
    pub fn new(url: &str) -> RunOptions {
        RunOptions {
            url: url.to_owned(),
            threads: 1,
            server_pid: None,
            also_urls: Vec::new(),
            also_server_pids: Vec::new(),
            progress: false,
            setup_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(5),
            connect_window: 256,
            deflate: false,
        }
    }
}

/// Why a scenario was not run at all.
#[derive(Debug)]
pub enum Error {
    /// The URL is not an allowed target.
    Target(TargetError),
    /// A parameter is outside the harness's bounds.
    Bounds(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Target(e) => write!(f, "refused target: {e}"),
            Error::Bounds(why) => write!(f, "out of bounds: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Runs `scenario` against `options.url` and reports. Refuses before connecting anywhere when the target
/// is not loopback or a parameter exceeds the caps.
pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<Report, Error> {
    let target = Target::parse(&options.url).map_err(Error::Target)?;
    let also_targets = options
        .also_urls
        .iter()
        .map(|url| Target::parse(url))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Target)?;
    check_bounds(scenario, options)?;
    let parameters = serde_json::to_value(scenario).unwrap_or_default();
    if *scenario == Scenario::Smoke {
        let mut report = smoke::run(&target, options.deflate);
        report.parameters = parameters;
        return Ok(report);
    }
    let mut plan = plan(scenario, target, options);
    plan.also_targets = also_targets;
    let fd_limit = runner::raise_fd_limit();
    if plan.clients.len() as u64 + 64 > fd_limit {
        return Err(Error::Bounds(format!(
            "{} connections need more than the file descriptor limit of {fd_limit}",
            plan.clients.len()
        )));
    }
    let observe = Observe {
        server_pid: options.server_pid,
        also_server_pids: options.also_server_pids.clone(),
        progress: options.progress,
        track_rss: matches!(scenario, Scenario::Soak { .. }),
    };
    Ok(runner::execute(plan, scenario.name(), parameters, &observe))
}

fn check_bounds(scenario: &Scenario, options: &RunOptions) -> Result<(), Error> {
    let (connections, duration, size) = match *scenario {
        Scenario::Smoke => (2, Duration::ZERO, 0),
        Scenario::Conns {
            connections, hold, ..
        } => (connections, hold, 0),
        Scenario::Fanout {
            members,
            rate,
            messages,
            size,
        } => {
            if rate <= 0.0 || !rate.is_finite() {
                return Err(Error::Bounds("rate must be positive".into()));
            }
            (
                members + 1,
                Duration::from_secs_f64(messages as f64 / rate),
                size,
            )
        }
        Scenario::Saturate {
            members,
            duration,
            size,
            ..
        } => (members + 1, duration, size),
        Scenario::Rooms {
            clients,
            rooms,
            duration,
            size,
            ..
        } => {
            if rooms == 0 {
                return Err(Error::Bounds("at least one room".into()));
            }
            (clients, duration, size)
        }
        Scenario::Churn {
            clients,
            rooms,
            churners,
            duration,
            size,
            ..
        }
        | Scenario::Soak {
            clients,
            rooms,
            churners,
            duration,
            size,
            ..
        } => {
            if rooms == 0 {
                return Err(Error::Bounds("at least one room".into()));
            }
            (clients + churners, duration, size)
        }
    };
    if connections > MAX_CONNECTIONS {
        return Err(Error::Bounds(format!(
            "{connections} connections; the cap is {MAX_CONNECTIONS}"
        )));
    }
    if duration > MAX_DURATION {
        return Err(Error::Bounds(format!(
            "{:.0} s; the cap is {} s",
            duration.as_secs_f64(),
            MAX_DURATION.as_secs()
        )));
    }
    if size > 60 * 1024 {
        return Err(Error::Bounds(format!(
            "{size}-byte texts; the cap is 60 KiB"
        )));
    }
    if options.threads == 0 || options.threads > 64 {
        return Err(Error::Bounds("threads must be 1 to 64".into()));
    }
    Ok(())
}

/// The clients, rooms and pacing of a scenario.
fn plan(scenario: &Scenario, target: Target, options: &RunOptions) -> Plan {
    let member = |room: u32, publisher: Option<u32>, counted: bool| ClientPlan {
        room: Some(room),
        publisher,
        counted,
        churner: false,
        probe: false,
        source: None,
    };
    let one_room = |name: &str| {
        vec![RoomPlan {
            name: name.to_owned(),
            publishers: 1,
        }]
    };
    let mut plan = Plan {
        target,
        also_targets: Vec::new(),
        rooms: Vec::new(),
        clients: Vec::new(),
        message_size: 0,
        pacing: Pacing::Silent,
        duration: Duration::ZERO,
        max_messages: None,
        setup_timeout: options.setup_timeout,
        drain_timeout: options.drain_timeout,
        threads: options.threads,
        connect_window: options.connect_window,
        deflate: options.deflate,
    };
    match *scenario {
        Scenario::Smoke => {}
        Scenario::Conns {
            connections,
            hold,
            sample,
        } => {
            let every = (connections / sample.max(1)).max(1);
            plan.clients = (0..connections)
                .map(|i| ClientPlan {
                    room: None,
                    publisher: None,
                    counted: false,
                    churner: false,
                    probe: sample > 0 && i % every == 0,
                    source: None,
                })
                .collect();
            plan.duration = hold;
        }
        Scenario::Fanout {
            members,
            rate,
            messages,
            size,
        } => {
            plan.rooms = one_room("fanout");
            plan.clients.push(member(0, Some(0), false));
            plan.clients
                .extend((0..members).map(|_| member(0, None, true)));
            plan.message_size = size;
            plan.pacing = Pacing::Rate(rate);
            plan.max_messages = Some(messages);
            // The cap on messages ends the run; the duration only bounds a server that stalls.
            plan.duration =
                Duration::from_secs_f64(messages as f64 / rate + 10.0).min(MAX_DURATION);
        }
        Scenario::Saturate {
            members,
            window,
            duration,
            size,
        } => {
            plan.rooms = one_room("saturate");
            plan.clients.push(member(0, Some(0), false));
            plan.clients
                .extend((0..members).map(|_| member(0, None, true)));
            plan.message_size = size;
            plan.pacing = Pacing::Window(window.max(1));
            plan.duration = duration;
        }
        Scenario::Rooms {
            clients,
            rooms,
            rate,
            duration,
            size,
        }
        | Scenario::Churn {
            clients,
            rooms,
            rate,
            duration,
            size,
            ..
        }
        | Scenario::Soak {
            clients,
            rooms,
            rate,
            duration,
            size,
            ..
        } => {
            let churners = match *scenario {
                Scenario::Churn { churners, .. } | Scenario::Soak { churners, .. } => churners,
                _ => 0,
            };
            let steady_in = |r: usize| (clients + rooms - 1 - r) / rooms;
            let churners_in = |r: usize| (churners + rooms - 1 - r) / rooms;
            plan.rooms = (0..rooms)
                .map(|r| RoomPlan {
                    name: format!("r{r}"),
                    publishers: (steady_in(r) + churners_in(r)) as u32,
                })
                .collect();
            plan.clients = (0..clients)
                .map(|i| member((i % rooms) as u32, Some((i / rooms) as u32), true))
                .collect();
            plan.clients.extend((0..churners).map(|j| {
                let r = j % rooms;
                ClientPlan {
                    churner: true,
                    ..member(r as u32, Some((steady_in(r) + j / rooms) as u32), false)
                }
            }));
            plan.message_size = size;
            plan.pacing = Pacing::Rate(rate);
            plan.duration = duration;
        }
    }
    spread_sources(&mut plan);
    plan
}

/// Binds clients to 127.0.0.2, .3, … once one source address would run short of ephemeral ports.
/// The first address's share stays unbound, which is exactly what the kernel would pick.
fn spread_sources(plan: &mut Plan) {
    let IpAddr::V4(_) = plan.target.addr.ip() else {
        return;
    };
    let per_address = ephemeral_ports().saturating_sub(1000).max(1000);
    if plan.clients.len() <= per_address {
        return;
    }
    for (i, client) in plan.clients.iter_mut().enumerate() {
        let block = i / per_address;
        if block > 0 {
            client.source = Some(Ipv4Addr::new(127, 0, 0, (1 + block.min(253)) as u8));
        }
    }
}

/// The size of the kernel's ephemeral port range (28,232 by default).
fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<usize>());
            match (it.next(), it.next()) {
                (Some(Ok(lo)), Some(Ok(hi))) if hi >= lo => Some(hi - lo + 1),
                _ => None,
            }
        })
        .unwrap_or(28_232)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RunOptions {
        RunOptions::new("ws://127.0.0.1:9/")
    }

    #[test]
    fn with_two_nodes_every_room_has_members_on_both() {
        let s = Scenario::Rooms {
            clients: 2000,
            rooms: 200,
            rate: 1.0,
            duration: Duration::from_secs(1),
            size: 10,
        };
        let mut p = plan(&s, Target::parse(&opts().url).unwrap(), &opts());
        p.also_targets = vec![Target::parse("ws://127.0.0.1:10/").unwrap()];
        for r in 0..p.rooms.len() as u32 {
            let ports: std::collections::BTreeSet<u16> = (0..p.clients.len())
                .filter(|&slot| p.clients[slot].room == Some(r))
                .map(|slot| p.target_of(slot).addr.port())
                .collect();
            assert_eq!(ports.len(), 2, "room {r}'s members are on both nodes");
        }
        let saturate = Scenario::Saturate {
            members: 100,
            window: 1,
            duration: Duration::from_secs(1),
            size: 10,
        };
        let mut p = plan(&saturate, Target::parse(&opts().url).unwrap(), &opts());
        p.also_targets = vec![Target::parse("ws://127.0.0.1:10/").unwrap()];
        let on_first = (0..p.clients.len())
            .filter(|&slot| p.target_of(slot).addr.port() == 9)
            .count();
        assert!(
            (30..=70).contains(&on_first),
            "{on_first} of 100 on the first node"
        );
    }

    #[test]
    fn rooms_give_every_publisher_a_distinct_number_in_its_room() {
        let s = Scenario::Churn {
            clients: 7,
            rooms: 3,
            rate: 1.0,
            churners: 4,
            duration: Duration::from_secs(1),
            size: 10,
        };
        let p = plan(&s, Target::parse(&opts().url).unwrap(), &opts());
        for (r, room) in p.rooms.iter().enumerate() {
            let mut numbers: Vec<u32> = p
                .clients
                .iter()
                .filter(|c| c.room == Some(r as u32))
                .filter_map(|c| c.publisher)
                .collect();
            numbers.sort();
            assert_eq!(numbers, (0..room.publishers).collect::<Vec<_>>());
        }
    }

    #[test]
    fn soak_plans_the_churn_traffic() {
        let churn = Scenario::Churn {
            clients: 7,
            rooms: 3,
            rate: 1.0,
            churners: 4,
            duration: Duration::from_secs(1),
            size: 10,
        };
        let soak = Scenario::Soak {
            clients: 7,
            rooms: 3,
            rate: 1.0,
            churners: 4,
            duration: Duration::from_secs(1),
            size: 10,
        };
        let target = || Target::parse(&opts().url).unwrap();
        assert_eq!(
            format!("{:?}", plan(&soak, target(), &opts())),
            format!("{:?}", plan(&churn, target(), &opts()))
        );
    }

    #[test]
    fn caps_are_enforced_before_connecting() {
        let too_many = Scenario::Conns {
            connections: MAX_CONNECTIONS + 1,
            hold: Duration::from_secs(1),
            sample: 1,
        };
        assert!(matches!(run(&too_many, &opts()), Err(Error::Bounds(_))));
        let too_long = Scenario::Saturate {
            members: 1,
            window: 1,
            duration: MAX_DURATION * 2,
            size: 10,
        };
        assert!(matches!(run(&too_long, &opts()), Err(Error::Bounds(_))));
    }

    #[test]
    fn many_connections_spread_over_source_addresses() {
        let s = Scenario::Conns {
            connections: 50_000,
            hold: Duration::from_secs(1),
            sample: 10,
        };
        let p = plan(&s, Target::parse(&opts().url).unwrap(), &opts());
        assert_eq!(p.clients[0].source, None);
        assert!(p.clients.last().unwrap().source.is_some());
        assert_eq!(p.clients.iter().filter(|c| c.probe).count(), 10);
    }
}
