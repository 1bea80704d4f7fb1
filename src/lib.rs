//! roomcast: a thread-per-core realtime WebSocket server (work in progress; see the modules below).
#![deny(missing_docs)]

pub mod config;
pub mod error;
mod http;

pub use http::{HttpContext, JsonRoute};
