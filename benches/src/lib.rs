//! Nothing but the benches: see `codec.rs`, `dispatch.rs` and `fanout.rs` beside this folder.
