//! The HTTP shard: HTTP/1.1 on one glommio executor, parsed and framed by hyper, answering the app's JSON
//! routes and the public directory.
//!
//! This module owns the listener's accept loop, one task per connection, the connection's timeouts and the
//! graceful stop. It must not decide what a request gets, and must not parse HTTP itself: hyper does.

// Nothing calls into this module yet; `expect` (not `allow`) fails the build once that is no longer true.
#![expect(dead_code, reason = "the accept loop lands in the next commit")]

mod static_files;
