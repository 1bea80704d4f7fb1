//! Every error roomcast reports, grouped by cause: start-up ([`StartError`], [`ConfigError`]), the
//! WebSocket protocol ([`ProtocolError`], each variant carrying its RFC 6455 close code) and a session's
//! life ([`SessionError`], what `on_error` receives).
//!
//! The protocol errors are plain enums without allocation because they are produced on the per-frame path.

use std::io;
use std::path::PathBuf;

/// A `.env` problem; the binary prints it as one line and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key is present with a value that does not parse or is out of range.
    #[error("invalid {key}={value:?}: expected {expected}")]
    Invalid {
        /// The `.env` key.
        key: &'static str,
        /// The value as given (trimmed).
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The env file exists but cannot be read or parsed.
    #[error("cannot read env file {path:?}: {reason}")]
    File {
        /// The env file.
        path: PathBuf,
        /// The parser's or the OS's explanation.
        reason: String,
    },
}

/// Why the server could not start; each message names the cause and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound (port in use, address not local, no permission).
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// `websocket` or `http`.
        what: &'static str,
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Another process already listens on the port: with `SO_REUSEPORT` the two would silently split the
    /// connections between them, and the members of one room would stop seeing each other.
    #[error(
        "{what} port {} on {} is already in use by another process (another roomcast?): stop it, or set \
         {key} to a free port",
        addr.port(),
        addr.ip()
    )]
    PortTaken {
        /// `websocket` or `http`.
        what: &'static str,
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The key that chooses the port.
        key: &'static str,
    },
    /// A glommio executor (an io_uring ring) could not be created.
    #[error("cannot start {executor}: {cause}. {fix}")]
    Executor {
        /// Which executor: `websocket shard 3`, `http shard`.
        executor: String,
        /// The OS or glommio error.
        cause: String,
        /// What the operator can do about it.
        fix: &'static str,
    },
    /// The history store could not be opened (a directory that cannot be created, a store another
    /// process holds, files that are not a store).
    #[error(
        "cannot open the history store in DATA_DIR={dir:?}: {cause}. Point DATA_DIR at a writable \
             directory no other roomcast uses, or set HISTORY_SIZE=0 to run without history"
    )]
    History {
        /// `DATA_DIR`.
        dir: PathBuf,
        /// The OS's or the store's explanation.
        cause: String,
    },
    /// The cluster's Redis client could not be set up from `CLUSTER_REDIS_URL` (an unreadable URL, or
    /// the bridge thread could not start). An unreachable Redis is not this: the node starts, serves its
    /// own sessions and keeps trying.
    #[error(
        "cannot use CLUSTER_REDIS_URL: {cause}. Set it to redis://host:port (one Redis) or          redis-cluster://host:port (a Redis Cluster), or leave it unset to run one node without Redis"
    )]
    Cluster {
        /// The client's explanation (never the URL: it may hold a password).
        cause: String,
    },
}

/// A violation of RFC 6455 (or of RFC 7692, permessage-deflate) by the peer; the session is closed with
/// [`ProtocolError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A client frame without a mask (RFC 6455 §5.1).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// RSV2 or RSV3 set, or RSV1 anywhere but on the first frame of a message of a session that
    /// negotiated permessage-deflate.
    #[error("reserved bits set where no negotiated extension allows them")]
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    #[error("reserved opcode {0}")]
    ReservedOpcode(u8),
    /// A control frame with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame whose payload is over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is still open.
    #[error("new data frame while a fragmented message is open")]
    ExpectedContinuation,
    /// A close frame with a one-byte payload, an invalid code, or a reason that is not UTF-8.
    #[error("malformed close frame")]
    BadClosePayload,
    /// A text message (or close reason) that is not valid UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A message whose frames add up to more than `WEBSOCKET_MAX_MESSAGE_SIZE`.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    MessageTooBig {
        /// The size announced so far.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A message split into more frames than `WEBSOCKET_MAX_FRAMES_PER_MESSAGE`; closed with 1008.
    #[error("message split into more than {limit} frames")]
    TooManyFrames {
        /// The configured limit.
        limit: u32,
    },
    /// A compressed message that inflates to more than `WEBSOCKET_MAX_MESSAGE_SIZE`; closed with 1009.
    #[error("compressed message inflates past the limit of {limit} bytes")]
    InflatedTooBig {
        /// The configured limit.
        limit: usize,
    },
    /// A compressed message that is not valid deflate data; closed with 1007, as data inconsistent with
    /// its message type.
    #[error("compressed message is not valid deflate data")]
    BadCompressedData,
}

impl ProtocolError {
    /// The close code RFC 6455 §7.4.1 assigns to this violation.
    pub fn close_code(self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::BadCompressedData => 1007,
            ProtocolError::MessageTooBig { .. } | ProtocolError::InflatedTooBig { .. } => 1009,
            ProtocolError::TooManyFrames { .. } => 1008,
            _ => 1002,
        }
    }
}

/// What went wrong with one session; passed to `on_error` before the session closes.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer broke the protocol; the session was closed with the error's close code.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// Reading or writing the socket failed (reset, broken pipe).
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The client did not read fast enough and its unsent bytes passed `WEBSOCKET_MAX_BACKPRESSURE`.
    #[error("slow consumer: {queued} bytes queued, limit {limit}")]
    SlowConsumer {
        /// Bytes waiting to be written.
        queued: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The client kept sending past `WEBSOCKET_RATE_LIMIT_MESSAGES` or `WEBSOCKET_RATE_LIMIT_BYTES` while
    /// its messages were being refused; the session was closed with 1008 "rate limit".
    #[error("rate limit: kept sending while refused")]
    RateLimited,
}
