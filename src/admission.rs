//! Who may open a session, decided on a valid upgrade request before the `101` is written: the origin
//! allowlist and the connection budgets. A refusal is an HTTP status the connection writes instead.
//!
//! - **Origin** (`WEBSOCKET_ALLOWED_ORIGINS`): a browser always sends the page's origin, so a page on
//!   another site cannot open sessions from its visitors' browsers unless that origin is allowed (403
//!   otherwise). Clients that send no `Origin` are not browsers and are let through: an origin check
//!   protects browsers' users, it does not authenticate anyone. By default the allowed origins are the
//!   server's own host (the host the client connected to, on any port: the page may be served by our HTTP
//!   side or by a reverse proxy in front of it) and loopback names (`localhost`, `127.0.0.1`, `[::1]`).
//! - **Budgets** (`WEBSOCKET_MAX_CONNECTIONS`, `WEBSOCKET_MAX_CONNECTIONS_PER_IP`): sessions open in the
//!   whole process and per client address, shared by every shard; past either, 503. The default total
//!   leaves [`DESCRIPTOR_RESERVE`] descriptors of the process's limit for everything else (the HTTP side's
//!   health checks, files, the rings), so one peer cannot take them all.
//!
//! The counters are touched once when a session opens and once when it ends, never per message; the per
//! address table is behind a lock for that reason, and an address leaves it with its last session.
//!
//! It must not read or write sockets, nor know about sessions beyond their addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::config::{AllowedOrigins, WebSocketSettings};
use crate::ws::handshake::Request;

/// Descriptors the automatic `WEBSOCKET_MAX_CONNECTIONS` leaves to everything but sessions.
pub(crate) const DESCRIPTOR_RESERVE: usize = 128;

/// Why an upgrade was refused, as the HTTP answer to give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// 403 or 503.
    pub(crate) status: u16,
    /// The status line's text.
    pub(crate) text: &'static str,
    /// The body, and the log line.
    pub(crate) reason: String,
}

/// The origin policy and the connection budgets of one server, shared by its shards.
#[derive(Debug)]
pub(crate) struct Admission {
    origins: AllowedOrigins,
    max_open: usize,
    max_per_ip: Option<u32>,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl Admission {
    pub(crate) fn new(settings: &WebSocketSettings) -> Admission {
        Admission {
            origins: settings.allowed_origins.clone(),
            max_open: match settings.max_connections {
                0 => automatic_max_connections(),
                n => n,
            },
            max_per_ip: u32::try_from(settings.max_connections_per_ip)
                .ok()
                .filter(|&n| n > 0),
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// The process-wide budget in force (the automatic one resolved).
    pub(crate) fn max_open(&self) -> usize {
        self.max_open
    }

    /// Refuses a browser page whose origin is not allowed; lets clients without `Origin` through.
    pub(crate) fn check_origin(&self, request: &Request) -> Result<(), Refused> {
        let Some(origin) = request.headers().get("Origin") else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
        let allowed = match &self.origins {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.contains(&origin),
            AllowedOrigins::SameHost => {
                let host = request
                    .headers()
                    .get("Host")
                    .and_then(|h| h.to_str().ok())
                    .map(|h| host_of(&h.to_ascii_lowercase()).to_owned());
                origin_host(&origin)
                    .is_some_and(|o| is_loopback_name(o) || host.as_deref().is_some_and(|h| h == o))
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Refused {
                status: 403,
                text: "Forbidden",
                reason: format!("origin not allowed: {origin}"),
            })
        }
    }

    /// Counts a new session from `ip`, or refuses it when a budget is spent. Every admitted session must
    /// be [`Admission::leave`]d when it ends.
    pub(crate) fn enter(&self, ip: IpAddr) -> Result<(), Refused> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_open).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(busy(format!(
                "too many connections (WEBSOCKET_MAX_CONNECTIONS={})",
                self.max_open
            )));
        }
        if let Some(max) = self.max_per_ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= max {
                drop(per_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(busy(format!(
                    "too many connections from {ip} (WEBSOCKET_MAX_CONNECTIONS_PER_IP={max})"
                )));
            }
            *count += 1;
        }
        Ok(())
    }

    /// A session admitted from `ip` has ended.
    pub(crate) fn leave(&self, ip: IpAddr) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if self.max_per_ip.is_some() {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

fn busy(reason: String) -> Refused {
    Refused {
        status: 503,
        text: "Service Unavailable",
        reason,
    }
}

/// The process's descriptor limit less [`DESCRIPTOR_RESERVE`], at least 1.
fn automatic_max_connections() -> usize {
    descriptor_limit().saturating_sub(DESCRIPTOR_RESERVE).max(1)
}

/// The soft `RLIMIT_NOFILE`.
fn descriptor_limit() -> usize {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Under this many sessions fitting in the descriptor limit, start-up says how to raise it.
const FEW_SESSIONS: usize = 10_000;

/// What start-up should warn about the descriptor limit, if anything: it is below a
/// `WEBSOCKET_MAX_CONNECTIONS` that was set, or (with the default, 0) fits fewer than [`FEW_SESSIONS`].
pub(crate) fn descriptor_warning(settings: &WebSocketSettings) -> Option<String> {
    let limit = descriptor_limit();
    let fits = limit.saturating_sub(DESCRIPTOR_RESERVE);
    let fix = "raise it with `ulimit -n` or LimitNOFILE= in the systemd unit (README: Running it in production)";
    match settings.max_connections {
        0 if fits < FEW_SESSIONS => Some(format!(
            "the descriptor limit (ulimit -n) is {limit}: at most {fits} sessions fit; for more, {fix}"
        )),
        wanted if wanted > fits => Some(format!(
            "WEBSOCKET_MAX_CONNECTIONS={wanted}, but the descriptor limit (ulimit -n) is {limit}: accepts \
             fail past about {fits} sessions; {fix}"
        )),
        _ => None,
    }
}

/// The host of a `Host` header value: without its port, IPv6 literals keeping their brackets.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// The host of a serialized origin (`scheme://host[:port]`), if it is one.
fn origin_host(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    if !matches!(scheme, "http" | "https") || rest.contains('/') {
        return None;
    }
    Some(host_of(rest))
}

fn is_loopback_name(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn admission(pairs: &[(&str, &str)]) -> Admission {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config::from_lookup(|k| map.get(k).cloned()).unwrap();
        Admission::new(&config.websocket)
    }

    fn request(host: &str, origin: Option<&str>) -> Request {
        let mut builder = Request::builder().uri("/").header("Host", host);
        if let Some(origin) = origin {
            builder = builder.header("Origin", origin);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn by_default_the_own_host_and_loopback_are_allowed() {
        let a = admission(&[]);
        for (host, origin) in [
            ("chat.example:9090", "http://chat.example:8080"),
            ("chat.example:9090", "https://chat.example"),
            ("10.0.0.5:9090", "http://10.0.0.5:8080"),
            ("[2001:db8::1]:9090", "http://[2001:db8::1]:8080"),
            ("chat.example:9090", "http://localhost:3000"),
            ("chat.example:9090", "http://127.0.0.1:8080"),
            ("chat.example:9090", "HTTP://CHAT.EXAMPLE:8080"),
        ] {
            assert_eq!(
                a.check_origin(&request(host, Some(origin))),
                Ok(()),
                "{origin}"
            );
        }
        assert_eq!(a.check_origin(&request("chat.example", None)), Ok(()));
        for origin in [
            "http://evil.example",
            "null",
            "http://chat.example.evil.example",
            "file://",
            "http://chat.example/path",
        ] {
            let refused = a.check_origin(&request("chat.example:9090", Some(origin)));
            assert_eq!(refused.map_err(|r| r.status), Err(403), "{origin}");
        }
    }

    #[test]
    fn a_list_allows_exactly_its_origins_and_a_star_allows_any() {
        let a = admission(&[(
            "WEBSOCKET_ALLOWED_ORIGINS",
            "https://app.example, http://localhost:5173",
        )]);
        assert!(a
            .check_origin(&request("x", Some("https://app.example")))
            .is_ok());
        assert!(a
            .check_origin(&request("x", Some("http://localhost:5173")))
            .is_ok());
        assert!(a
            .check_origin(&request("x", Some("http://localhost:8080")))
            .is_err());
        assert!(a
            .check_origin(&request("app.example", Some("http://app.example")))
            .is_err());
        let any = admission(&[("WEBSOCKET_ALLOWED_ORIGINS", "*")]);
        assert!(any.check_origin(&request("x", Some("null"))).is_ok());
    }

    #[test]
    fn budgets_refuse_past_the_total_and_past_one_address_then_free_on_leave() {
        let a = admission(&[
            ("WEBSOCKET_MAX_CONNECTIONS", "3"),
            ("WEBSOCKET_MAX_CONNECTIONS_PER_IP", "2"),
        ]);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(a.enter(one).is_ok() && a.enter(one).is_ok());
        assert_eq!(a.enter(one).map_err(|r| r.status), Err(503));
        assert!(a.enter(two).is_ok());
        let full = a.enter(two).unwrap_err();
        assert_eq!(full.status, 503);
        assert!(
            full.reason.contains("WEBSOCKET_MAX_CONNECTIONS=3"),
            "{}",
            full.reason
        );
        a.leave(one);
        assert!(a.enter(two).is_ok());
        a.leave(one);
        a.leave(two);
        a.leave(two);
        assert!(a.per_ip.lock().unwrap().is_empty());
        assert_eq!(a.open.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_automatic_total_leaves_a_reserve_of_descriptors() {
        let a = admission(&[]);
        assert!(a.max_open() >= 1);
        assert!(a.max_open() < usize::MAX - DESCRIPTOR_RESERVE + 1);
    }
}
