//! The WebSocket protocol itself (RFC 6455), independent of sockets and sessions: the opening handshake
//! with its extension negotiation (`extensions`), decoding client frames into messages (`codec`),
//! encoding server frames (`encode`), and permessage-deflate's compression (`deflate`, RFC 7692).

pub(crate) mod codec;
pub(crate) mod deflate;
pub(crate) mod encode;
pub(crate) mod extensions;
pub(crate) mod handshake;

#[cfg(test)]
mod adversarial;
