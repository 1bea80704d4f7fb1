//! Operator configuration: every `.env` key, its default, and its validation, in one place.
//!
//! `.env` is operator input, so nothing here panics: [`Config::load`] returns a [`ConfigError`] that names
//! the key and the value it refused, and the binary turns that into one line and exit code 2. Lookup order
//! for each key is: the process environment, then the env file, then the documented default; a key that is
//! absent everywhere takes its default silently, a key that is present must parse.
//!
//! This module must not read anything but the env file and the environment, and must not start anything.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;

/// One `.env` key: its name, its default (`None`: unset, which means off or "not used"), and what it does.
/// [`KEYS`] is the one list: the configuration's defaults come from it, `roomcast --help` prints it, and
/// start-up warns about keys in the env file that are not in it.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// The key.
    pub name: &'static str,
    /// Its default, as it would be written in `.env`.
    pub default: Option<&'static str>,
    /// What it sets, in one line.
    pub help: &'static str,
    /// Its value is never printed (a key, or a URL that may hold a password).
    pub secret: bool,
}

const fn key(name: &'static str, default: &'static str, help: &'static str) -> KeyDoc {
    KeyDoc {
        name,
        default: Some(default),
        help,
        secret: false,
    }
}

const fn unset(name: &'static str, help: &'static str) -> KeyDoc {
    KeyDoc {
        name,
        default: None,
        help,
        secret: false,
    }
}

const fn secret(name: &'static str, help: &'static str) -> KeyDoc {
    KeyDoc {
        name,
        default: None,
        help,
        secret: true,
    }
}

/// Every key the configuration reads, in the order of the README's table.
pub const KEYS: &[KeyDoc] = &[
    key("APP_NAME", "roomcast", "shown in logs"),
    key("APP_ENV", "development", "shown in logs"),
    key("SERVER_HOST", "0.0.0.0", "the HTTP listener's address"),
    key("SERVER_PORT", "8080", "the HTTP port (0: a free one)"),
    key("SERVER_REQUEST_TIMEOUT", "5000", "ms to receive an HTTP request or a WebSocket upgrade"),
    key("SERVER_IO_THREADS", "0", "WebSocket shards (0: one per available core)"),
    key("SERVER_SESSION_TIMEOUT_SEC", "20", "s before an idle HTTP keep-alive connection is closed"),
    key("SERVER_BENCH_MODE", "false", "silence the per-connection log lines"),
    key("SERVER_MAX_REQUEST_HEAD", "16384", "bytes of HTTP request line and headers (1024 to 1 MiB); past it 431"),
    key("SERVER_MAX_KEEPALIVE_CONNECTIONS", "256", "HTTP connections kept alive at once (0: no keep-alive)"),
    key("WEBSOCKET_HOST", "0.0.0.0", "the WebSocket listener's address"),
    key("WEBSOCKET_PORT", "9090", "the WebSocket port (0: a free one), shared by every shard"),
    key("WEBSOCKET_MAX_MESSAGE_SIZE", "65536", "bytes a message may have (1 to 1 GiB); past it close 1009"),
    key("WEBSOCKET_IDLE_TIMEOUT", "60", "s of silence before close 1001 (0: never)"),
    key("WEBSOCKET_ENABLE_DEFLATE", "true", "negotiate permessage-deflate with clients that offer it"),
    key("WEBSOCKET_DEFLATE_MIN_SIZE", "64", "bytes under which messages go uncompressed (0: compress all)"),
    key("WEBSOCKET_PING_INTERVAL", "30", "s between server pings (0: none)"),
    key("WEBSOCKET_AUTO_PING_PONG", "true", "answer client pings"),
    key("WEBSOCKET_MAX_BACKPRESSURE", "1048576", "unsent bytes per session (1 to 1 GiB); past it close 1008"),
    key("WEBSOCKET_MAX_FRAMES_PER_MESSAGE", "1024", "frames one message may be split into (0: no cap)"),
    key("WEBSOCKET_MAX_UNFINISHED_BYTES_PER_SHARD", "67108864", "memory one shard may hold for messages still arriving"),
    key("WEBSOCKET_RATE_LIMIT_MESSAGES", "50", "messages a session may send per second (0: no limit)"),
    key("WEBSOCKET_RATE_LIMIT_BURST", "100", "messages a session may send at once after a quiet while"),
    key("WEBSOCKET_RATE_LIMIT_BYTES", "1048576", "payload bytes a session may send per second (0: no limit)"),
    unset("WEBSOCKET_ALLOWED_ORIGINS", "browser origins that may connect: *, or a comma-separated list (unset: this host and loopback)"),
    key("WEBSOCKET_MAX_CONNECTIONS", "0", "sessions open at once in the process (0: the descriptor limit less 128)"),
    key("WEBSOCKET_MAX_CONNECTIONS_PER_IP", "1024", "sessions open at once from one address (0: no cap)"),
    secret("AUTH_SECRET", "the chat app's token key, at least 32 bytes (unset: open, as in the seed)"),
    key("HISTORY_SIZE", "1000", "messages kept per room (0: no history)"),
    key("HISTORY_TTL_SEC", "86400", "s a message is kept (0: until HISTORY_SIZE pushes it out)"),
    key("DATA_DIR", "./data", "where the history store lives"),
    key("HISTORY_FSYNC", "100", "every_write, off, or ms between forced writes of the store's journal"),
    key("HISTORY_GROUP_COMMIT_US", "1000", "µs the store waits for company before writing (0: none)"),
    key("HISTORY_RECOVERY_MAX", "300", "messages a join with `since` recovers at most"),
    key("HISTORY_MEMORY_MB", "256", "MiB of rooms' history kept in memory over all shards"),
    key("PRESENCE_EVENTS", "false", "tell members who joins and leaves"),
    secret("CLUSTER_REDIS_URL", "redis://host:port or redis-cluster://host:port to share rooms with other nodes (unset: one node)"),
    key("CLUSTER_UNSUBSCRIBE_LINGER_MS", "2000", "ms a node stays subscribed to a room after its last member left"),
    key("CLUSTER_PARTITIONS", "16", "Redis Cluster hash slots rooms are spread over (1 to 16384)"),
    key("CLUSTER_PRESENCE_TTL_MS", "30000", "ms a dead node's members stay in presence at most (at least 3000)"),
    key("CLUSTER_PUBLISH_BATCH_US", "1000", "µs the bridge gathers publishes before sending them to Redis (0: none)"),
    secret("API_KEY", "turns on the server API (POST /api/publish, GET /api/rooms/{room}) with this bearer key"),
    key("METRICS_ENABLED", "true", "serve METRICS_PATH (Prometheus) and /api/stats"),
    key("LOG_FORMAT", "text", "text, or json (one object per line); RUST_LOG filters (default info)"),
    key("LOG_STATS_INTERVAL_SEC", "60", "s between summary log lines (0: none)"),
    key("METRICS_PATH", "/metrics", "where the Prometheus text is served"),
    key("PUBLIC_PATH", "public", "the directory of static files"),
    key("PUBLIC_MOUNT", "/", "the URL prefix it is served under"),
    key("PUBLIC_INDEX", "index.html", "the file served for a directory"),
    key("PUBLIC_CACHE_CONTROL", "no-cache", "Cache-Control of static files"),
    key("PUBLIC_SPA_FALLBACK", "false", "serve the index for unknown paths"),
];

/// The default [`KEYS`] gives `key`, if any.
fn default_of(key: &str) -> Option<&'static str> {
    KEYS.iter().find(|k| k.name == key).and_then(|k| k.default)
}

/// The whole server configuration, one field group per subsystem.
#[derive(Debug, Clone)]
pub struct Config {
    /// `APP_NAME`, `APP_ENV`: shown in logs, not interpreted.
    pub app: AppSettings,
    /// `SERVER_*`: the HTTP side, the shard count and the log volume.
    pub server: ServerSettings,
    /// `WEBSOCKET_*`: the WebSocket listener and protocol limits.
    pub websocket: WebSocketSettings,
    /// `PUBLIC_*`: the static files the HTTP side serves.
    pub public: PublicSettings,
    /// `AUTH_*`: for the application's authentication hook; the library itself does not read them.
    pub auth: AuthSettings,
    /// `HISTORY_*`, `DATA_DIR`, `PRESENCE_EVENTS`: rooms' history and presence, used once the application
    /// switches history on ([`crate::Server::keep_history`]).
    pub rooms: RoomSettings,
    /// `CLUSTER_*`: several nodes sharing rooms through Redis; off unless `CLUSTER_REDIS_URL` is set.
    pub cluster: ClusterSettings,
    /// `METRICS_*`: the scrape endpoints of the HTTP side.
    pub metrics: MetricsSettings,
    /// `API_KEY`: the server API for backends on the HTTP side.
    pub api: ApiSettings,
    /// `LOG_*`: how the binary logs (the library logs through `tracing` and leaves the output to it).
    pub logs: LogSettings,
}

/// How the binary writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// `LOG_FORMAT` (default `text`).
    pub format: LogFormat,
    /// `LOG_STATS_INTERVAL_SEC` (default 60; 0: none): how often a summary line (connections, messages,
    /// queued bytes, lag) is logged.
    pub stats_interval: Option<Duration>,
}

/// `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What the HTTP side tells operators: `GET /metrics` (Prometheus) and `GET /api/stats` (JSON, for the
/// dashboard page).
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// `METRICS_ENABLED` (default true): serve both; off, they answer 404.
    pub enabled: bool,
    /// `METRICS_PATH` (default `/metrics`): where the Prometheus text is served.
    pub path: String,
}

/// The server API for backends: `POST /api/publish`, `GET /api/rooms/{room}`.
#[derive(Clone, Default)]
pub struct ApiSettings {
    /// `API_KEY` (default: unset, the API answers 404): what a backend sends as
    /// `Authorization: Bearer <API_KEY>`; at least 16 bytes.
    pub key: Option<String>,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Several roomcast nodes sharing rooms through Redis ([`crate::cluster`]).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `CLUSTER_REDIS_URL` (default: unset, one node and no Redis): `redis://[user:password@]host:port[/db]`
    /// for one Redis (or Valkey) server, `redis-cluster://host:port[?node=host:port...]` for a Redis
    /// Cluster.
    pub redis_url: Option<String>,
    /// `CLUSTER_UNSUBSCRIBE_LINGER_MS` (default 2000): how long a node stays subscribed to a room after its
    /// last local member left, so that a member who comes straight back costs no unsubscribe and
    /// subscribe.
    pub unsubscribe_linger: Duration,
    /// `CLUSTER_PARTITIONS` (default 16, 1 to 16384): how many Redis Cluster hash slots rooms are spread
    /// over (each room's keys and channel share one slot, through a hash tag); the same on every node.
    pub partitions: u16,
    /// `CLUSTER_PRESENCE_TTL_MS` (default 30000, at least 3000; the same on every node): how long a room's
    /// member stays in Redis's presence without its node refreshing it (each node refreshes its own every
    /// third of this): the longest a node that died leaves its members behind.
    pub presence_ttl: Duration,
    /// `CLUSTER_PUBLISH_BATCH_US` (default 1000, 0: none, at most 1000000): how long the bridge gathers
    /// publishes before sending them to Redis together. Latency traded for CPU, as
    /// `HISTORY_GROUP_COMMIT_US` does on one node: publications that travel together wake Redis, this
    /// node's bridge, and every subscribed node's bridge and home shard once, not once each.
    pub publish_batch: Option<Duration>,
}

/// Rooms' history (kept by each room's home shard, on an embedded store) and presence.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    /// `HISTORY_SIZE` (default 1000; 0 turns history off): the newest publications kept per room.
    pub history_size: usize,
    /// `HISTORY_TTL_SEC` (default 86400; 0: kept until pushed out by `HISTORY_SIZE`): publications older
    /// than this are dropped.
    pub history_ttl: Option<Duration>,
    /// `DATA_DIR` (default `./data`, created at start): where the history store lives.
    pub data_dir: PathBuf,
    /// `HISTORY_FSYNC` (default 100): when the store's journal is forced to disk.
    pub fsync: HistoryFsync,
    /// `HISTORY_GROUP_COMMIT_US` (default 1000; 0: none): how long the store waits for more publications
    /// before writing what it has. Members get a publication once it is written, so this is latency
    /// traded for CPU: a trickle of publications shares commits and wake-ups instead of paying one each.
    pub group_commit: Option<Duration>,
    /// `HISTORY_RECOVERY_MAX` (default 300, at least 1): the most publications a join with `since`
    /// returns; a client that missed more gets `recovered: false`.
    pub recovery_max: usize,
    /// `HISTORY_MEMORY_MB` (default 256, at least 1), held here in bytes: what the rooms' history kept in
    /// memory may take, over all shards; past it the least recently used rooms are read back from the store
    /// when next needed.
    pub memory_budget: usize,
    /// `PRESENCE_EVENTS` (default false): tell every member when a member joins or leaves (a message per
    /// member per join, so off by default).
    pub presence_events: bool,
}

/// `HISTORY_FSYNC`: when the history store forces its journal to disk. Every publication reaches the
/// operating system before any member sees it, so a crash of the process alone loses nothing whatever
/// this says; it decides what a power loss or a kernel crash can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryFsync {
    /// `every_write`: each group of publications written is on disk before its members see it.
    EveryWrite,
    /// A number of milliseconds: at most this much of the newest history is lost on power loss.
    Interval(Duration),
    /// `off`: the operating system writes when it chooses.
    Off,
}

/// What the application needs to check credentials (the chat app: HS256 JWTs).
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// `AUTH_SECRET` (default: unset, no authentication): the key tokens are signed with, at least 32
    /// bytes (HS256 wants a key as long as its hash).
    pub secret: Option<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, even in a debug dump of the configuration.
        f.debug_struct("AuthSettings")
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Names the application in logs.
#[derive(Debug, Clone)]
pub struct AppSettings {
    /// `APP_NAME` (default `roomcast`).
    pub name: String,
    /// `APP_ENV` (default `development`).
    pub env: String,
}

/// The HTTP listener and process-wide settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `SERVER_HOST` (default `0.0.0.0`): the HTTP listener's address.
    pub host: IpAddr,
    /// `SERVER_PORT` (default 8080; 0 picks a free port).
    pub port: u16,
    /// `SERVER_REQUEST_TIMEOUT` in milliseconds (default 5000): an HTTP request, or a WebSocket upgrade
    /// request, not fully read within this time is dropped.
    pub request_timeout: Duration,
    /// `SERVER_IO_THREADS` (default 0): how many WebSocket shards to start; 0 means one per available core.
    pub io_threads: usize,
    /// `SERVER_SESSION_TIMEOUT_SEC` (default 20): an idle HTTP keep-alive connection is closed after this.
    pub session_timeout: Duration,
    /// `SERVER_BENCH_MODE` (default false): silences the per-connection log lines.
    pub bench_mode: bool,
    /// `SERVER_MAX_REQUEST_HEAD` in bytes (default 16384, 1024 to 1 MiB): a longer request line and headers
    /// get 431.
    pub max_request_head: usize,
    /// `SERVER_MAX_KEEPALIVE_CONNECTIONS` (default 256): HTTP connections open at once past which a new one
    /// is answered without keep-alive (one request, then closed); 0 turns keep-alive off.
    pub max_keepalive_connections: usize,
}

/// The WebSocket listener and the protocol limits every session obeys.
#[derive(Debug, Clone)]
pub struct WebSocketSettings {
    /// `WEBSOCKET_HOST` (default `0.0.0.0`).
    pub host: IpAddr,
    /// `WEBSOCKET_PORT` (default 9090; 0 picks a free port shared by every shard).
    pub port: u16,
    /// `WEBSOCKET_MAX_MESSAGE_SIZE` in bytes (default 65536, 1 to 1 GiB): a message whose frames announce
    /// more is refused with close code 1009 before its payload is buffered; a compressed one, from its
    /// frames' headers with the allowance incompressible data needs, then by what it inflates to.
    pub max_message_size: usize,
    /// `WEBSOCKET_IDLE_TIMEOUT` in seconds (default 60; 0 disables): a session from which nothing (not even
    /// a pong) arrived for this long is closed with code 1001.
    pub idle_timeout: Option<Duration>,
    /// `WEBSOCKET_ENABLE_DEFLATE` (default true): negotiate permessage-deflate (RFC 7692) with clients
    /// that offer it, always without context takeover, so no session keeps compression state.
    pub enable_deflate: bool,
    /// `WEBSOCKET_DEFLATE_MIN_SIZE` in bytes (default 64; 0 compresses everything): a message shorter than
    /// this goes out uncompressed even to a deflate session, where compression would save next to nothing.
    pub deflate_min_size: usize,
    /// `WEBSOCKET_PING_INTERVAL` in seconds (default 30; 0 disables): the server pings every session this
    /// often, which also keeps browsers' auto-pongs resetting the idle timer.
    pub ping_interval: Option<Duration>,
    /// `WEBSOCKET_AUTO_PING_PONG` (default true): answer a client's ping with a pong.
    pub auto_ping_pong: bool,
    /// `WEBSOCKET_MAX_BACKPRESSURE` in bytes (default 1 MiB, 1 to 1 GiB): when a session's unsent outbound
    /// bytes exceed this, it is a slow consumer and is closed with code 1008.
    pub max_backpressure: usize,
    /// `WEBSOCKET_RATE_LIMIT_MESSAGES`, `WEBSOCKET_RATE_LIMIT_BURST`, `WEBSOCKET_RATE_LIMIT_BYTES`: what one
    /// session may send (text, binary and pings alike).
    pub rate_limits: RateLimits,
    /// `WEBSOCKET_ALLOWED_ORIGINS` (default: the server's own host and loopback names): which browser
    /// pages may open sessions; any other `Origin` gets 403 at the handshake.
    pub allowed_origins: AllowedOrigins,
    /// `WEBSOCKET_MAX_CONNECTIONS` (default 0: the process's descriptor limit less a reserve of 128):
    /// sessions open at once in the whole process; past it an upgrade gets 503.
    pub max_connections: usize,
    /// `WEBSOCKET_MAX_CONNECTIONS_PER_IP` (default 1024; 0 turns it off): sessions open at once from one
    /// client address; past it an upgrade gets 503.
    pub max_connections_per_ip: usize,
    /// `WEBSOCKET_MAX_FRAMES_PER_MESSAGE` (default 1024; 0 turns it off): frames one message may be split
    /// into; past it the session is closed with 1008.
    pub max_frames_per_message: u32,
    /// `WEBSOCKET_MAX_UNFINISHED_BYTES_PER_SHARD` (default 64 MiB, at least `WEBSOCKET_MAX_MESSAGE_SIZE`):
    /// memory one shard may hold for messages still arriving (partial frames and fragments); past it, the
    /// session holding the most is closed with 1008.
    pub max_unfinished_bytes_per_shard: usize,
}

impl WebSocketSettings {
    /// The size from which messages are compressed for deflate sessions; `None` when deflate is off.
    pub(crate) fn compress_from(&self) -> Option<usize> {
        self.enable_deflate.then_some(self.deflate_min_size)
    }
}

/// Which browser origins may open sessions (clients that send no `Origin` header always may).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// The default: origins whose host is the host the client connected to (any scheme and port), and
    /// `localhost`, `127.0.0.1`, `[::1]`.
    SameHost,
    /// `*`: any origin, `null` included.
    Any,
    /// Exactly these serialized origins (`scheme://host[:port]`, lowercase), or `null`.
    List(Vec<String>),
}

/// Per-session rate limits; a message over either is refused, and a session that keeps sending while
/// refused is closed with 1008 "rate limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `WEBSOCKET_RATE_LIMIT_MESSAGES` per second (default 50; 0 turns it off) with a burst of
    /// `WEBSOCKET_RATE_LIMIT_BURST` messages (default 100).
    pub messages: Option<Bucket>,
    /// `WEBSOCKET_RATE_LIMIT_BYTES` of message payload per second (default 1 MiB; 0 turns it off); the burst
    /// is one second's worth, or one message of `WEBSOCKET_MAX_MESSAGE_SIZE` if that is more.
    pub bytes: Option<Bucket>,
}

impl RateLimits {
    /// No limit at all.
    pub const OFF: RateLimits = RateLimits {
        messages: None,
        bytes: None,
    };

    /// Whether neither limit is set.
    pub fn is_off(&self) -> bool {
        self.messages.is_none() && self.bytes.is_none()
    }
}

/// A token bucket: refills at `per_second` units a second and holds at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Units (messages or bytes) a second.
    pub per_second: u64,
    /// Units that may be spent at once after a quiet while.
    pub burst: u64,
}

/// Static files served by the HTTP side.
#[derive(Debug, Clone)]
pub struct PublicSettings {
    /// `PUBLIC_PATH` (default `public`): the directory served; nothing outside it is ever read.
    pub path: PathBuf,
    /// `PUBLIC_MOUNT` (default `/`): the URL prefix the directory is mounted at; must start with `/`.
    pub mount: String,
    /// `PUBLIC_INDEX` (default `index.html`): the file served for a directory.
    pub index: String,
    /// `PUBLIC_CACHE_CONTROL` (default `no-cache`): sent as `Cache-Control` with every static file.
    pub cache_control: String,
    /// `PUBLIC_SPA_FALLBACK` (default false): serve the index for unknown paths under the mount.
    pub spa_fallback: bool,
}

/// A configuration with how it was arrived at ([`Config::load_explained`]).
#[derive(Debug)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: Config,
    /// The env file read, or the defaults.
    pub source: ConfigSource,
    /// Every key of [`KEYS`] with its effective value (`None`: unset; secrets shown as `<set>`) and
    /// where it came from.
    pub values: Vec<(&'static str, Option<String>, Origin)>,
    /// Keys in the env file that look like roomcast's but are not read.
    pub unknown: Vec<UnknownKey>,
}

/// Where a key's effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The process environment, which overrides the file.
    Environment,
    /// The env file.
    File,
    /// The default in [`KEYS`].
    Default,
}

/// A key in the env file that roomcast does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// The key as written.
    pub name: String,
    /// The known key it is probably a misspelling of.
    pub suggestion: Option<&'static str>,
}

impl UnknownKey {
    /// The prefixes of roomcast's keys: a key with one of them that is not read is a mistake.
    const PREFIXES: [&'static str; 12] = [
        "APP_",
        "SERVER_",
        "WEBSOCKET_",
        "PUBLIC_",
        "HISTORY_",
        "CLUSTER_",
        "METRICS_",
        "AUTH_",
        "PRESENCE_",
        "API_",
        "LOG_",
        "DATA_",
    ];

    /// `name` as an unknown key worth a warning: it has one of roomcast's prefixes, or it is within
    /// three edits of a known key (`WEBSCOKET_PORT`); other keys in the file are the application's own.
    fn of(name: &str) -> Option<UnknownKey> {
        let nearest = KEYS
            .iter()
            .map(|k| (strsim::damerau_levenshtein(name, k.name), k.name))
            .min()
            .filter(|(distance, _)| *distance <= 3)
            .map(|(_, known)| known);
        let ours = Self::PREFIXES.iter().any(|p| name.starts_with(p));
        (ours || nearest.is_some()).then(|| UnknownKey {
            name: name.to_owned(),
            suggestion: nearest,
        })
    }
}

/// Where the configuration came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// Read from this env file (plus environment overrides).
    File(PathBuf),
    /// No env file was found at this path: defaults plus environment overrides.
    Defaults(PathBuf),
}

impl Default for Config {
    fn default() -> Self {
        Config::from_lookup(|_| None).expect("the defaults are valid")
    }
}

impl Config {
    /// Reads `env_file` (default `.env` in the working directory) and the process environment.
    ///
    /// A missing file is not an error: the defaults apply and [`ConfigSource::Defaults`] says so. An env file
    /// that exists but cannot be parsed is an error naming the file.
    pub fn load(env_file: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
        Config::load_explained(env_file).map(|loaded| (loaded.config, loaded.source))
    }

    /// [`Config::load`], with what an operator checks: where each key's value came from, and the keys in
    /// the env file that roomcast does not read (a misspelt one is otherwise silently ignored).
    pub fn load_explained(env_file: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
        let path = env_file.map_or_else(|| PathBuf::from(".env"), Path::to_path_buf);
        let (file_values, source) = match dotenvy::from_path_iter(&path) {
            Ok(iter) => {
                let mut values = HashMap::new();
                for item in iter {
                    let (key, value) = item.map_err(|e| ConfigError::File {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                    values.insert(key, value);
                }
                (values, ConfigSource::File(path))
            }
            Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                (HashMap::new(), ConfigSource::Defaults(path))
            }
            Err(e) => {
                return Err(ConfigError::File {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let config = Config::from_lookup(|key| {
            std::env::var(key)
                .ok()
                .or_else(|| file_values.get(key).cloned())
        })?;
        let values = KEYS
            .iter()
            .map(|key| {
                let (value, origin) =
                    match (std::env::var(key.name).ok(), file_values.get(key.name)) {
                        (Some(v), _) => (Some(v), Origin::Environment),
                        (None, Some(v)) => (Some(v.clone()), Origin::File),
                        (None, None) => (key.default.map(str::to_owned), Origin::Default),
                    };
                let value = match value {
                    Some(v) if key.secret && !v.is_empty() => Some("<set>".to_owned()),
                    other => other,
                };
                (key.name, value, origin)
            })
            .collect();
        let mut unknown: Vec<UnknownKey> = file_values
            .keys()
            .filter(|name| !KEYS.iter().any(|k| k.name == name.as_str()))
            .filter_map(|name| UnknownKey::of(name))
            .collect();
        unknown.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(LoadedConfig {
            config,
            source,
            values,
            unknown,
        })
    }

    /// Builds a configuration from a key lookup; every key is validated here and nowhere else.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let keys = Keys { lookup: &lookup };
        Ok(Config {
            app: AppSettings {
                name: keys.text("APP_NAME")?,
                env: keys.text("APP_ENV")?,
            },
            server: ServerSettings {
                host: keys.ip("SERVER_HOST")?,
                port: keys.port("SERVER_PORT")?,
                request_timeout: Duration::from_millis(
                    keys.positive("SERVER_REQUEST_TIMEOUT")?,
                ),
                io_threads: keys.number("SERVER_IO_THREADS")? as usize,
                session_timeout: Duration::from_secs(
                    keys.positive("SERVER_SESSION_TIMEOUT_SEC")?,
                ),
                bench_mode: keys.flag("SERVER_BENCH_MODE")?,
                max_request_head: keys.request_head("SERVER_MAX_REQUEST_HEAD")?,
                max_keepalive_connections: keys.number("SERVER_MAX_KEEPALIVE_CONNECTIONS")?
                    as usize,
            },
            websocket: WebSocketSettings {
                host: keys.ip("WEBSOCKET_HOST")?,
                port: keys.port("WEBSOCKET_PORT")?,
                max_message_size: keys.at_most("WEBSOCKET_MAX_MESSAGE_SIZE", 1 << 30)?
                    as usize,
                idle_timeout: keys.seconds_or_off("WEBSOCKET_IDLE_TIMEOUT")?,
                enable_deflate: keys.flag("WEBSOCKET_ENABLE_DEFLATE")?,
                deflate_min_size: keys.number("WEBSOCKET_DEFLATE_MIN_SIZE")? as usize,
                ping_interval: keys.seconds_or_off("WEBSOCKET_PING_INTERVAL")?,
                auto_ping_pong: keys.flag("WEBSOCKET_AUTO_PING_PONG")?,
                max_backpressure: keys.at_most("WEBSOCKET_MAX_BACKPRESSURE", 1 << 30)?
                    as usize,
                rate_limits: keys.rate_limits()?,
                allowed_origins: keys.origins("WEBSOCKET_ALLOWED_ORIGINS")?,
                max_connections: keys.number("WEBSOCKET_MAX_CONNECTIONS")? as usize,
                max_connections_per_ip: keys.number("WEBSOCKET_MAX_CONNECTIONS_PER_IP")?
                    as usize,
                max_frames_per_message: match keys
                    .number("WEBSOCKET_MAX_FRAMES_PER_MESSAGE")?
                {
                    0 => u32::MAX,
                    n => u32::try_from(n).unwrap_or(u32::MAX),
                },
                max_unfinished_bytes_per_shard: keys.unfinished_budget()?,
            },
            public: PublicSettings {
                path: PathBuf::from(keys.text("PUBLIC_PATH")?),
                mount: keys.mount("PUBLIC_MOUNT")?,
                index: keys.index_name("PUBLIC_INDEX")?,
                cache_control: keys.text("PUBLIC_CACHE_CONTROL")?,
                spa_fallback: keys.flag("PUBLIC_SPA_FALLBACK")?,
            },
            auth: AuthSettings {
                secret: keys.secret("AUTH_SECRET")?,
            },
            rooms: RoomSettings {
                history_size: keys.number("HISTORY_SIZE")? as usize,
                history_ttl: keys.seconds_or_off("HISTORY_TTL_SEC")?,
                data_dir: PathBuf::from(keys.text("DATA_DIR")?),
                fsync: keys.fsync("HISTORY_FSYNC")?,
                group_commit: keys.micros_or_off("HISTORY_GROUP_COMMIT_US")?,
                recovery_max: keys.positive("HISTORY_RECOVERY_MAX")? as usize,
                memory_budget: (keys.positive("HISTORY_MEMORY_MB")? as usize)
                    .saturating_mul(1 << 20),
                presence_events: keys.flag("PRESENCE_EVENTS")?,
            },
            cluster: ClusterSettings {
                redis_url: keys.redis_url("CLUSTER_REDIS_URL")?,
                unsubscribe_linger: Duration::from_millis(
                    keys.number("CLUSTER_UNSUBSCRIBE_LINGER_MS")?,
                ),
                publish_batch: keys.micros_or_off("CLUSTER_PUBLISH_BATCH_US")?,
                presence_ttl: match keys.number("CLUSTER_PRESENCE_TTL_MS")? {
                    ms @ 3_000.. => Duration::from_millis(ms),
                    ms => {
                        return Err(Keys::invalid(
                            "CLUSTER_PRESENCE_TTL_MS",
                            &ms.to_string(),
                            "a number of milliseconds of at least 3000 (a refresh every third of it must outlast a slow Redis)",
                        ))
                    }
                },
                partitions: match keys.positive("CLUSTER_PARTITIONS")? {
                    n @ 1..=16384 => n as u16,
                    n => {
                        return Err(Keys::invalid(
                            "CLUSTER_PARTITIONS",
                            &n.to_string(),
                            "a whole number from 1 to 16384 (Redis Cluster's hash slots)",
                        ))
                    }
                },
            },
            metrics: MetricsSettings {
                enabled: keys.flag("METRICS_ENABLED")?,
                path: keys.url_path("METRICS_PATH")?,
            },
            api: ApiSettings {
                key: keys.api_key("API_KEY")?,
            },
            logs: LogSettings {
                format: match keys.value("LOG_FORMAT").as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => return Err(Keys::invalid("LOG_FORMAT", other, "text or json")),
                },
                stats_interval: keys.seconds_or_off("LOG_STATS_INTERVAL_SEC")?,
            },
        })
    }
}

/// Typed accessors over a lookup; each one owns the rule for one kind of value.
struct Keys<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Keys<'_> {
    /// The key's value: the lookup's (trimmed), else its default in [`KEYS`]; `None` only for a key that
    /// is unset and has no default.
    fn raw(&self, key: &'static str) -> Option<String> {
        (self.lookup)(key)
            .map(|v| v.trim().to_owned())
            .or_else(|| default_of(key).map(str::to_owned))
    }

    /// The value of a key that has a default, so always one.
    fn value(&self, key: &'static str) -> String {
        self.raw(key)
            .unwrap_or_else(|| panic!("{key} is read as having a default, and KEYS gives it none"))
    }

    fn invalid(key: &'static str, value: &str, expected: &'static str) -> ConfigError {
        ConfigError::Invalid {
            key,
            value: value.to_owned(),
            expected,
        }
    }

    fn text(&self, key: &'static str) -> Result<String, ConfigError> {
        match self.value(key) {
            v if v.is_empty() => Err(Self::invalid(key, &v, "a non-empty value")),
            v => Ok(v),
        }
    }

    fn number(&self, key: &'static str) -> Result<u64, ConfigError> {
        let v = self.value(key);
        v.parse::<u64>()
            .map_err(|_| Self::invalid(key, &v, "a whole number"))
    }

    fn positive(&self, key: &'static str) -> Result<u64, ConfigError> {
        let n = self.number(key)?;
        if n == 0 {
            return Err(Self::invalid(key, "0", "a whole number of at least 1"));
        }
        Ok(n)
    }

    fn at_most(&self, key: &'static str, max: u64) -> Result<u64, ConfigError> {
        let n = self.positive(key)?;
        if n > max {
            return Err(Self::invalid(
                key,
                &n.to_string(),
                "a whole number from 1 to 1073741824 (1 GiB)",
            ));
        }
        Ok(n)
    }

    /// Microseconds up to a second; 0 is none.
    fn micros_or_off(&self, key: &'static str) -> Result<Option<Duration>, ConfigError> {
        match self.number(key)? {
            0 => Ok(None),
            n if n <= 1_000_000 => Ok(Some(Duration::from_micros(n))),
            n => Err(Self::invalid(
                key,
                &n.to_string(),
                "a number of microseconds from 0 to 1000000",
            )),
        }
    }

    fn seconds_or_off(&self, key: &'static str) -> Result<Option<Duration>, ConfigError> {
        let n = self.number(key)?;
        Ok((n > 0).then(|| Duration::from_secs(n)))
    }

    fn port(&self, key: &'static str) -> Result<u16, ConfigError> {
        let v = self.value(key);
        v.parse::<u16>()
            .map_err(|_| Self::invalid(key, &v, "a port number from 0 to 65535"))
    }

    fn ip(&self, key: &'static str) -> Result<IpAddr, ConfigError> {
        match self.value(key) {
            v if v == "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            v => v
                .parse::<IpAddr>()
                .map_err(|_| Self::invalid(key, &v, "an IP address such as 0.0.0.0 or 127.0.0.1")),
        }
    }

    fn flag(&self, key: &'static str) -> Result<bool, ConfigError> {
        match self.value(key).as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            v => Err(Self::invalid(key, v, "true or false")),
        }
    }

    fn fsync(&self, key: &'static str) -> Result<HistoryFsync, ConfigError> {
        match self.value(key).as_str() {
            "every_write" => Ok(HistoryFsync::EveryWrite),
            "off" => Ok(HistoryFsync::Off),
            v => match v.parse::<u64>() {
                Ok(ms) if ms > 0 => Ok(HistoryFsync::Interval(Duration::from_millis(ms))),
                _ => Err(Self::invalid(
                    key,
                    v,
                    "every_write, off, or an interval in milliseconds (at least 1)",
                )),
            },
        }
    }

    fn rate_limits(&self) -> Result<RateLimits, ConfigError> {
        let messages = self.number("WEBSOCKET_RATE_LIMIT_MESSAGES")?;
        let burst = self.positive("WEBSOCKET_RATE_LIMIT_BURST")?;
        let bytes = self.number("WEBSOCKET_RATE_LIMIT_BYTES")?;
        let max_message = self.at_most("WEBSOCKET_MAX_MESSAGE_SIZE", 1 << 30)?;
        Ok(RateLimits {
            messages: (messages > 0).then_some(Bucket {
                per_second: messages,
                burst,
            }),
            bytes: (bytes > 0).then_some(Bucket {
                per_second: bytes,
                burst: bytes.max(max_message),
            }),
        })
    }

    fn secret(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            // The value is not echoed back: the error names the key and the length only.
            Some(v) if v.len() < 32 => Err(Self::invalid(
                key,
                &format!("<{} bytes>", v.len()),
                "a secret of at least 32 bytes (e.g. `openssl rand -hex 32`)",
            )),
            Some(v) => Ok(Some(v)),
        }
    }

    /// Unset or empty: no cluster. The rest of the URL (host, port, credentials) is checked when the
    /// client is built at start-up, which names this key too.
    fn redis_url(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        let Some(value) = self.raw(key).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let scheme_ok = value.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "redis" | "redis-cluster") && !rest.is_empty()
        });
        if !scheme_ok {
            // Credentials may be in it: only the scheme is echoed back.
            let shown = value.split_once("://").map_or("<no scheme>", |(s, _)| s);
            return Err(Self::invalid(
                key,
                shown,
                "redis://host:port or redis-cluster://host:port (TLS is not built in:                  put Redis on a private network)",
            ));
        }
        Ok(Some(value))
    }

    fn request_head(&self, key: &'static str) -> Result<usize, ConfigError> {
        let n = self.number(key)?;
        if !(1024..=1 << 20).contains(&n) {
            return Err(Self::invalid(
                key,
                &n.to_string(),
                "a number of bytes from 1024 to 1048576",
            ));
        }
        Ok(n as usize)
    }

    fn unfinished_budget(&self) -> Result<usize, ConfigError> {
        let key = "WEBSOCKET_MAX_UNFINISHED_BYTES_PER_SHARD";
        let budget = self.number(key)?;
        let max_message = self.at_most("WEBSOCKET_MAX_MESSAGE_SIZE", 1 << 30)?;
        if budget < max_message {
            return Err(Self::invalid(
                key,
                &budget.to_string(),
                "a number of bytes at least WEBSOCKET_MAX_MESSAGE_SIZE (one message must fit)",
            ));
        }
        Ok(usize::try_from(budget).unwrap_or(usize::MAX))
    }

    fn origins(&self, key: &'static str) -> Result<AllowedOrigins, ConfigError> {
        let Some(value) = self.raw(key).filter(|v| !v.is_empty()) else {
            return Ok(AllowedOrigins::SameHost);
        };
        if value == "*" {
            return Ok(AllowedOrigins::Any);
        }
        let mut origins = Vec::new();
        for origin in value.split(',').map(str::trim) {
            let origin = origin.to_ascii_lowercase();
            let well_formed = origin == "null"
                || origin.split_once("://").is_some_and(|(scheme, rest)| {
                    matches!(scheme, "http" | "https")
                        && !rest.is_empty()
                        && !rest.contains(['/', '?', '#', ' '])
                });
            if !well_formed {
                return Err(Self::invalid(
                    key,
                    &value,
                    "*, or a comma-separated list of origins such as https://chat.example or \
                     http://localhost:8080 (scheme://host[:port], no path)",
                ));
            }
            origins.push(origin);
        }
        Ok(AllowedOrigins::List(origins))
    }

    /// A URL path of its own: starts with `/`, nothing to resolve, no query.
    fn url_path(&self, key: &'static str) -> Result<String, ConfigError> {
        let v = self.text(key)?;
        if !v.starts_with('/') || v.len() < 2 || v.contains("..") || v.contains(['?', '#', ' ']) {
            return Err(Self::invalid(
                key,
                &v,
                "a URL path such as /metrics (starting with /, without .., ? or #)",
            ));
        }
        Ok(v)
    }

    fn api_key(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            // As with AUTH_SECRET, the value is not echoed back.
            Some(v) if v.len() < 16 || !v.bytes().all(|b| b.is_ascii_graphic()) => {
                Err(Self::invalid(
                    key,
                    &format!("<{} bytes>", v.len()),
                    "a key of at least 16 printable characters without spaces (e.g. `openssl rand -hex 24`)",
                ))
            }
            Some(v) => Ok(Some(v)),
        }
    }

    fn mount(&self, key: &'static str) -> Result<String, ConfigError> {
        let v = self.text(key)?;
        if !v.starts_with('/') || v.contains("..") {
            return Err(Self::invalid(
                key,
                &v,
                "a URL path starting with / and without ..",
            ));
        }
        Ok(v)
    }

    fn index_name(&self, key: &'static str) -> Result<String, ConfigError> {
        let v = self.text(key)?;
        if v.contains('/') || v == ".." || v == "." {
            return Err(Self::invalid(
                key,
                &v,
                "a plain file name such as index.html",
            ));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn the_key_table_is_every_key_read_and_the_readme_and_env_name_them_all() {
        let read = std::cell::RefCell::new(Vec::new());
        Config::from_lookup(|key| {
            read.borrow_mut().push(key.to_owned());
            None
        })
        .unwrap();
        let mut read = read.into_inner();
        read.sort();
        read.dedup();
        let mut table: Vec<String> = KEYS.iter().map(|k| k.name.to_owned()).collect();
        table.sort();
        assert_eq!(
            read, table,
            "KEYS must list exactly the keys from_lookup reads"
        );
        for key in KEYS {
            if let Some(default) = key.default {
                let config = with(&[(key.name, default)]);
                assert!(
                    config.is_ok(),
                    "{}'s default {default:?} must parse",
                    key.name
                );
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let env = std::fs::read_to_string(root.join(".env")).unwrap();
        for key in KEYS {
            assert!(
                readme.contains(&format!("`{}`", key.name)),
                "README: {}",
                key.name
            );
            assert!(
                env.contains(&format!("{}=", key.name)),
                ".env: {}",
                key.name
            );
        }
    }

    #[test]
    fn unknown_keys_that_look_like_ours_are_named_with_a_guess() {
        let typo = UnknownKey::of("WEBSCOKET_PORT").unwrap();
        assert_eq!(typo.suggestion, Some("WEBSOCKET_PORT"));
        let ours = UnknownKey::of("WEBSOCKET_COMPRESSION_LEVEL").unwrap();
        assert_eq!(ours.name, "WEBSOCKET_COMPRESSION_LEVEL");
        assert!(
            UnknownKey::of("DATABASE_URL").is_none(),
            "the application's own key"
        );
    }

    #[test]
    fn defaults_match_the_seed() {
        let c = Config::default();
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.websocket.port, 9090);
        assert_eq!(c.websocket.max_message_size, 65536);
        assert_eq!(c.websocket.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.websocket.ping_interval, Some(Duration::from_secs(30)));
        assert!(c.websocket.auto_ping_pong);
        assert_eq!(
            c.websocket.rate_limits.messages,
            Some(Bucket {
                per_second: 50,
                burst: 100
            })
        );
        assert_eq!(
            c.websocket.rate_limits.bytes.map(|b| b.per_second),
            Some(1 << 20)
        );
        assert_eq!(c.public.mount, "/");
        assert_eq!(c.public.index, "index.html");
    }

    #[test]
    fn bad_values_name_key_and_value() {
        for (key, value) in [
            ("WEBSOCKET_PORT", "abc"),
            ("WEBSOCKET_PORT", "70000"),
            ("WEBSOCKET_MAX_MESSAGE_SIZE", "0"),
            ("WEBSOCKET_ENABLE_DEFLATE", "maybe"),
            ("WEBSOCKET_DEFLATE_MIN_SIZE", "small"),
            ("SERVER_HOST", "not-an-ip"),
            ("PUBLIC_MOUNT", "static"),
            ("SERVER_REQUEST_TIMEOUT", "-5"),
            ("WEBSOCKET_RATE_LIMIT_MESSAGES", "fast"),
            ("WEBSOCKET_RATE_LIMIT_BURST", "0"),
            ("WEBSOCKET_RATE_LIMIT_BYTES", "1e6"),
            ("WEBSOCKET_ALLOWED_ORIGINS", "chat.example"),
            ("WEBSOCKET_ALLOWED_ORIGINS", "https://chat.example/app"),
            ("WEBSOCKET_MAX_CONNECTIONS", "-1"),
            ("WEBSOCKET_MAX_CONNECTIONS_PER_IP", "many"),
            ("WEBSOCKET_MAX_FRAMES_PER_MESSAGE", "-3"),
            ("WEBSOCKET_MAX_UNFINISHED_BYTES_PER_SHARD", "1000"),
            ("SERVER_MAX_REQUEST_HEAD", "100"),
            ("SERVER_MAX_KEEPALIVE_CONNECTIONS", "lots"),
            ("HISTORY_SIZE", "many"),
            ("HISTORY_TTL_SEC", "1d"),
            ("HISTORY_FSYNC", "always"),
            ("HISTORY_FSYNC", "0"),
            ("HISTORY_RECOVERY_MAX", "0"),
            ("HISTORY_GROUP_COMMIT_US", "soon"),
            ("HISTORY_GROUP_COMMIT_US", "2000000"),
            ("HISTORY_MEMORY_MB", "0"),
            ("PRESENCE_EVENTS", "sometimes"),
            ("CLUSTER_REDIS_URL", "localhost:6379"),
            ("CLUSTER_REDIS_URL", "http://localhost:6379"),
            ("CLUSTER_UNSUBSCRIBE_LINGER_MS", "2s"),
            ("CLUSTER_PARTITIONS", "0"),
            ("CLUSTER_PARTITIONS", "16385"),
            ("CLUSTER_PRESENCE_TTL_MS", "2999"),
            ("CLUSTER_PUBLISH_BATCH_US", "2000000"),
        ] {
            let err = with(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
            // A URL is not echoed whole (it may hold a password): its scheme is.
            let shown = match key {
                "CLUSTER_REDIS_URL" => value.split_once("://").map_or("<no scheme>", |(s, _)| s),
                _ => value,
            };
            assert!(err.contains(shown), "{err}");
        }
    }

    #[test]
    fn the_cluster_is_off_unless_a_redis_url_is_set() {
        assert!(with(&[]).unwrap().cluster.redis_url.is_none());
        assert!(with(&[("CLUSTER_REDIS_URL", "")])
            .unwrap()
            .cluster
            .redis_url
            .is_none());
        let on = with(&[("CLUSTER_REDIS_URL", "redis://:secret@10.0.0.5:6379/2")]).unwrap();
        assert_eq!(
            on.cluster.redis_url.as_deref(),
            Some("redis://:secret@10.0.0.5:6379/2")
        );
        assert_eq!(on.cluster.partitions, 16);
        assert_eq!(on.cluster.unsubscribe_linger, Duration::from_secs(2));
        let err = with(&[("CLUSTER_REDIS_URL", "rediss://:secret@host:6379")])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn history_settings() {
        let c = Config::default().rooms;
        assert_eq!(c.history_size, 1000);
        assert_eq!(c.history_ttl, Some(Duration::from_secs(86400)));
        assert_eq!(c.fsync, HistoryFsync::Interval(Duration::from_millis(100)));
        assert_eq!(c.recovery_max, 300);
        assert_eq!(c.group_commit, Some(Duration::from_millis(1)));
        let none = with(&[("HISTORY_GROUP_COMMIT_US", "0")]).unwrap().rooms;
        assert_eq!(none.group_commit, None);
        assert!(!c.presence_events);
        let c = with(&[("HISTORY_FSYNC", "every_write"), ("HISTORY_SIZE", "0")])
            .unwrap()
            .rooms;
        assert_eq!(c.fsync, HistoryFsync::EveryWrite);
        assert_eq!(c.history_size, 0);
        let off = with(&[("HISTORY_FSYNC", "off")]).unwrap().rooms.fsync;
        assert_eq!(off, HistoryFsync::Off);
    }

    #[test]
    fn a_short_auth_secret_is_refused_without_being_echoed() {
        let err = with(&[("AUTH_SECRET", "hunter2")]).unwrap_err().to_string();
        assert!(
            err.contains("AUTH_SECRET") && err.contains("<7 bytes>"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let long = "k".repeat(32);
        let config = with(&[("AUTH_SECRET", long.as_str())]).unwrap();
        assert_eq!(config.auth.secret.as_deref(), Some(long.as_str()));
        assert!(!format!("{config:?}").contains(&long));
        assert!(Config::default().auth.secret.is_none());
    }

    #[test]
    fn zero_disables_optional_timers() {
        let c = with(&[
            ("WEBSOCKET_IDLE_TIMEOUT", "0"),
            ("WEBSOCKET_PING_INTERVAL", "0"),
        ])
        .unwrap();
        assert_eq!(c.websocket.idle_timeout, None);
        assert_eq!(c.websocket.ping_interval, None);
    }

    #[test]
    fn zero_turns_rate_limits_off_and_a_byte_burst_fits_the_largest_message() {
        let off = with(&[
            ("WEBSOCKET_RATE_LIMIT_MESSAGES", "0"),
            ("WEBSOCKET_RATE_LIMIT_BYTES", "0"),
        ])
        .unwrap();
        assert!(off.websocket.rate_limits.is_off());
        let small = with(&[
            ("WEBSOCKET_RATE_LIMIT_BYTES", "1000"),
            ("WEBSOCKET_MAX_MESSAGE_SIZE", "4096"),
        ])
        .unwrap();
        assert_eq!(
            small.websocket.rate_limits.bytes,
            Some(Bucket {
                per_second: 1000,
                burst: 4096
            })
        );
    }
}
