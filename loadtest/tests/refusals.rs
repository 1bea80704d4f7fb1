//! What the harness refuses or fails: targets outside loopback (before any connection), and a server
//! whose replies differ from the seed's.

mod common;

use common::{options, start_chat, Pong};
use loadtest::{run, Error, RunOptions, Scenario, TargetError};

#[test]
fn targets_outside_loopback_are_refused_without_connecting() {
    for url in [
        "ws://10.0.0.1:9090/",
        "ws://example.com/",
        "ws://[2001:db8::1]:80/",
    ] {
        let started = std::time::Instant::now();
        let result = run(&Scenario::Smoke, &RunOptions::new(url));
        assert!(
            matches!(
                result,
                Err(Error::Target(
                    TargetError::NotLoopback(_) | TargetError::NotAnAddress(_)
                ))
            ),
            "{url}: {result:?}"
        );
        // A connect attempt to an unroutable address would take seconds; a refusal takes none.
        assert!(
            started.elapsed().as_millis() < 100,
            "{url} was refused at once"
        );
    }
}

#[test]
fn a_wrong_reply_makes_smoke_fail() {
    let server = start_chat(1, Pong::Wrong);
    let report = run(&Scenario::Smoke, &options(&server)).unwrap();
    assert!(!report.passed);
    let failed = report.steps.iter().find(|s| !s.ok).expect("a failed step");
    assert_eq!(failed.name, "ping -> pong");
    assert!(failed.detail.as_deref().unwrap().contains("pang"));
    server.stop();
}
