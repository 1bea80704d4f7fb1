//! The comparison peer (`peers/tokio-chat`) speaks the protocol the harness expects: smoke passes against
//! it reply by reply, and the load scenarios run against it at tiny sizes lose nothing.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use common::{options_at, small_churn};
use loadtest::{run, Report, Scenario};

/// Starts the peer on 127.0.0.1 with a free port, on a two-worker tokio runtime in a thread of its own
/// that lives as long as the test process. The socket is bound before the thread starts, so the harness
/// may connect at once: the kernel queues connections until the peer accepts them.
fn start_peer() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free loopback port");
    let addr = listener.local_addr().expect("the bound address");
    listener
        .set_nonblocking(true)
        .expect("tokio needs a non-blocking listener");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()
        .expect("the peer's runtime starts");
    std::thread::spawn(move || {
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener)
                .expect("the listener joins the runtime");
            tokio_chat::serve(listener).await;
        });
    });
    addr
}

/// The run passed; if not, says why, with the kinds of failed connections (a reply out of order in
/// set-up shows as `protocol`).
fn assert_passed(report: &Report) {
    assert!(
        report.passed,
        "{:?}; set-up errors {:?}; disconnects {:?}",
        report.failures, report.connect_errors, report.disconnects
    );
}

#[test]
fn smoke_passes_against_the_peer() {
    let report = run(&Scenario::Smoke, &options_at(start_peer())).unwrap();
    assert_passed(&report);
    assert!(report.steps.len() >= 10);
}

#[test]
fn saturate_against_the_peer_loses_nothing() {
    let scenario = Scenario::Saturate {
        members: 20,
        window: 8,
        duration: Duration::from_millis(1500),
        size: 100,
    };
    let report = run(&scenario, &options_at(start_peer())).unwrap();
    assert_passed(&report);
    assert!(report.messages_sent > 8, "the window reopens");
    assert_eq!(report.deliveries, report.messages_sent * 20);
    assert_eq!(
        (report.lost, report.duplicated, report.out_of_order),
        (0, 0, 0)
    );
}

#[test]
fn rooms_against_the_peer_deliver_within_each_room() {
    let scenario = Scenario::Rooms {
        clients: 40,
        rooms: 4,
        rate: 10.0,
        duration: Duration::from_secs(1),
        size: 50,
    };
    let report = run(&scenario, &options_at(start_peer())).unwrap();
    assert_passed(&report);
    // Every message reaches the 10 members of its room, its sender included.
    assert_eq!(report.deliveries, report.messages_sent * 10);
    assert_eq!(report.lost, 0);
}

#[test]
fn churn_against_the_peer_leaves_and_rejoins_without_loss() {
    let scenario = small_churn();
    let mut options = options_at(start_peer());
    options.threads = 2;
    let report = run(&scenario, &options).unwrap();
    assert_passed(&report);
    assert!(
        report.churn_cycles > 4,
        "churners cycled: {}",
        report.churn_cycles
    );
    assert_eq!(report.lost, 0);
}
