//! Bytes of an upgrade request: never a panic, only 101, a 4xx refusal, or "not complete yet".
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::internals::upgrade_status;

fuzz_target!(|data: &[u8]| {
    if let Some(status) = upgrade_status(data) {
        assert!(status == 101 || (400..500).contains(&status), "{status}");
    }
});
