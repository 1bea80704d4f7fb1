//! The WebSocket protocol itself (RFC 6455), independent of sockets and sessions: the opening handshake,
//! decoding client frames into messages (`codec`) and encoding server frames (`encode`).

pub(crate) mod codec;
pub(crate) mod encode;
pub(crate) mod handshake;

#[cfg(test)]
mod adversarial;
