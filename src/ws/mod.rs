//! The WebSocket protocol itself (RFC 6455), independent of sockets and sessions: the opening handshake
//! and the frame codec.

pub(crate) mod codec;
pub(crate) mod handshake;
