//! `--deflate` end to end against the in-process chat server: with deflate on, every upgrade negotiates
//! permessage-deflate, deliveries arrive compressed and are inflated intact (the suite's deflate runs at
//! tiny sizes); with it off, a run that offers it fails with `deflate_refused` instead of measuring plain
//! frames; without the offer nothing is compressed.

mod common;

use std::time::Duration;

use common::{options, start_chat, start_deflate_chat, Pong};
use loadtest::{run, Scenario};

#[test]
fn saturate_with_deflate_inflates_every_delivery() {
    let server = start_deflate_chat(2);
    let scenario = Scenario::Saturate {
        members: 20,
        window: 8,
        duration: Duration::from_millis(1500),
        size: 100,
    };
    let mut opts = options(&server);
    opts.deflate = true;
    let report = run(&scenario, &opts).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    assert!(report.deflate);
    assert_eq!(
        report.deflate_negotiated, 21,
        "the publisher and 20 members"
    );
    assert_eq!(report.deliveries, report.messages_sent * 20);
    // Every delivery (over the server's 64-byte floor, and compressible) came compressed; the short
    // welcome and join replies came plain.
    assert!(
        report.messages_compressed >= report.deliveries,
        "{} compressed, {} deliveries",
        report.messages_compressed,
        report.deliveries
    );
    assert!(report.messages_plain >= 2 * 21);
    assert!(
        report.bytes_received < report.message_bytes_received,
        "compression shows on the wire: {} read, {} inflated",
        report.bytes_received,
        report.message_bytes_received
    );
    server.stop();
}

#[test]
fn idle_connections_with_deflate_are_held_and_measured() {
    let server = start_deflate_chat(2);
    let scenario = Scenario::Conns {
        connections: 200,
        hold: Duration::from_millis(500),
        sample: 20,
    };
    let mut opts = options(&server);
    opts.deflate = true;
    // The server runs in this process, so this process's RSS is the server's.
    opts.server_pid = Some(std::process::id());
    let report = run(&scenario, &opts).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    assert_eq!(report.deflate_negotiated, 200);
    assert_eq!((report.probes_sent, report.probes_answered), (20, 20));
    let server_figures = report.server.expect("/proc figures with --server-pid");
    assert!(server_figures.rss_per_connection_bytes.is_some());
    server.stop();
}

#[test]
fn smoke_with_deflate_passes_against_a_deflate_server() {
    let server = start_deflate_chat(1);
    let mut opts = options(&server);
    opts.deflate = true;
    let report = run(&Scenario::Smoke, &opts).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    assert!(report.deflate);
    server.stop();
}

#[test]
fn deflate_offered_to_a_server_without_it_fails_clearly() {
    let server = start_chat(1, Pong::Right);
    let scenario = Scenario::Conns {
        connections: 10,
        hold: Duration::from_millis(200),
        sample: 0,
    };
    let mut opts = options(&server);
    opts.deflate = true;
    let report = run(&scenario, &opts).unwrap();
    assert!(!report.passed);
    assert_eq!(report.ready, 0, "no connection went on without deflate");
    assert_eq!(report.deflate_negotiated, 0);
    assert_eq!(report.connect_errors.get("deflate_refused"), Some(&10));
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.contains("WEBSOCKET_ENABLE_DEFLATE=true")),
        "{:?}",
        report.failures
    );

    let smoke = run(&Scenario::Smoke, &opts).unwrap();
    assert!(!smoke.passed);
    let failed = smoke.steps.iter().find(|s| !s.ok).expect("a failed step");
    assert!(
        failed
            .detail
            .as_deref()
            .unwrap()
            .contains("permessage-deflate"),
        "{failed:?}"
    );
    server.stop();
}

#[test]
fn without_the_offer_a_deflate_server_sends_plain_frames() {
    let server = start_deflate_chat(2);
    let scenario = Scenario::Saturate {
        members: 10,
        window: 8,
        duration: Duration::from_millis(500),
        size: 100,
    };
    let report = run(&scenario, &options(&server)).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    assert!(!report.deflate);
    assert_eq!(
        (report.deflate_negotiated, report.messages_compressed),
        (0, 0)
    );
    assert!(report.messages_plain >= report.deliveries);
    assert!(report.bytes_received > report.message_bytes_received);
    server.stop();
}
