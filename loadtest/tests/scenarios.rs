//! Every load scenario, at tiny sizes, against the in-process chat server: each completes, delivers what
//! it should, and reports no loss, duplication or reordering.

mod common;

use std::time::Duration;

use common::{options, small_churn, start_chat, Pong};
use loadtest::{run, Scenario};

#[test]
fn smoke_passes_against_the_seed_replies() {
    let server = start_chat(2, Pong::Right);
    let report = run(&Scenario::Smoke, &options(&server)).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    assert!(report.steps.len() >= 10);
    server.stop();
}

#[test]
fn fanout_delivers_every_message_to_every_member() {
    let server = start_chat(2, Pong::Right);
    let scenario = Scenario::Fanout {
        members: 5,
        rate: 500.0,
        messages: 50,
        size: 64,
    };
    let report = run(&scenario, &options(&server)).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    assert_eq!(report.messages_sent, 50);
    assert_eq!(report.deliveries, 250);
    assert_eq!(
        (report.lost, report.duplicated, report.out_of_order),
        (0, 0, 0)
    );
    let latency = report.latency_us.expect("latency measured");
    assert_eq!(latency.samples, 250);
    assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    server.stop();
}

#[test]
fn saturate_keeps_the_window_full_without_loss() {
    let server = start_chat(2, Pong::Right);
    let scenario = Scenario::Saturate {
        members: 20,
        window: 8,
        duration: Duration::from_millis(1500),
        size: 100,
    };
    let report = run(&scenario, &options(&server)).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    assert!(
        report.messages_sent > 8,
        "the window reopens as deliveries complete"
    );
    assert_eq!(report.deliveries, report.messages_sent * 20);
    assert_eq!(report.lost, 0);
    server.stop();
}

#[test]
fn conns_holds_every_connection_and_the_sample_answers() {
    let server = start_chat(2, Pong::Right);
    let scenario = Scenario::Conns {
        connections: 300,
        hold: Duration::from_millis(500),
        sample: 30,
    };
    let mut opts = options(&server);
    opts.server_pid = Some(std::process::id());
    let report = run(&scenario, &opts).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    assert_eq!(report.ready, 300);
    assert_eq!((report.probes_sent, report.probes_answered), (30, 30));
    assert!(report.server.is_some(), "/proc figures with --server-pid");
    server.stop();
}

#[test]
fn rooms_deliver_within_each_room_without_loss() {
    let server = start_chat(2, Pong::Right);
    let scenario = Scenario::Rooms {
        clients: 40,
        rooms: 4,
        rate: 10.0,
        duration: Duration::from_secs(1),
        size: 50,
    };
    let report = run(&scenario, &options(&server)).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    // Every message reaches the 10 members of its room, its sender included.
    assert_eq!(report.deliveries, report.messages_sent * 10);
    assert_eq!(report.lost, 0);
    server.stop();
}

#[test]
fn churn_cycles_sessions_while_steady_members_lose_nothing() {
    let server = start_chat(2, Pong::Right);
    let scenario = small_churn();
    let mut opts = options(&server);
    opts.threads = 2;
    let report = run(&scenario, &opts).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    assert!(
        report.churn_cycles > 4,
        "churners cycled: {}",
        report.churn_cycles
    );
    assert_eq!(report.lost, 0);
    server.stop();
}

#[test]
fn soak_churns_and_tracks_the_server_memory_with_its_pid() {
    let server = start_chat(2, Pong::Right);
    let scenario = Scenario::Soak {
        clients: 40,
        rooms: 5,
        rate: 5.0,
        churners: 5,
        duration: Duration::from_secs(3),
        size: 100,
    };
    let report = run(&scenario, &options(&server)).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    assert!(
        report.churn_cycles > 5,
        "churners cycled: {}",
        report.churn_cycles
    );
    assert!(report.server.is_none(), "no /proc figures without a pid");

    // The server runs in this process, so this process's RSS is the server's.
    let mut opts = options(&server);
    opts.server_pid = Some(std::process::id());
    let report = run(&scenario, &opts).unwrap();
    assert!(report.passed, "{:?}", report.failures);
    let memory = report
        .server
        .and_then(|s| s.soak)
        .expect("RSS start, peak and end with --server-pid");
    assert!(memory.rss_start_bytes > 0);
    assert!(
        memory.rss_peak_bytes >= memory.rss_start_bytes.max(memory.rss_end_bytes),
        "{memory:?}"
    );
    assert!(
        memory.rss_end_bytes <= memory.rss_end_limit_bytes,
        "{memory:?}"
    );
    assert!(memory.settle_seconds < 16.0, "the settle is bounded");
    server.stop();
}
