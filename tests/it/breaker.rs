//! The blast-radius breaker: more services alerting at once than one bad deploy explains
//! pauses automatic rollbacks, in git, for every replica, until a person resumes or the
//! window passes.

use crate::common::*;
use jiff::SignedDuration;
use rollbackd::Actor;
use rollbackd::{Options, Outcome};

const SERVICES: [&str; 4] = ["search", "payments", "ledger", "email"];

/// Four more services at a good version, then a bad deploy of each ten minutes ago; the
/// breaker trips past two services in 10 minutes.
fn world() -> World {
    let w = World::new();
    w.write_config(
        &ConfigSpec::new()
            .set("pause.breaker", json!({ "max_services": 2, "window": "10m" }))
            .set("git.fetch_freshness", "0s"),
    );
    for s in SERVICES {
        w.deploy(s, "prod", "1.0.0", 120);
    }
    for s in SERVICES {
        w.deploy(s, "prod", "1.1.0", 10);
    }
    w
}

fn alert(engine: &mut rollbackd::Engine, w: &World, service: &str, fp: &str) -> rollbackd::Report {
    engine.handle(&w.alert(service, "prod", fp), &Options::default()).unwrap()
}

fn pushed(report: &rollbackd::Report) -> bool {
    matches!(report.outcome, Outcome::RolledBack { .. })
}

#[test]
fn too_many_services_at_once_pause_automatic_rollbacks_on_every_replica_until_resumed() {
    let w = world();
    let mut one = w.engine();
    assert!(pushed(&alert(&mut one, &w, "search", "a1")));
    assert!(pushed(&alert(&mut one, &w, "payments", "a2")));

    // The third service's alert reaches another replica: it counts the two rollbacks git
    // records, trips, and proposes instead of pushing.
    let head = w.head();
    let mut two = w.replica("replica-2");
    let report = alert(&mut two, &w, "ledger", "a3");
    assert!(matches!(report.outcome, Outcome::Proposed { .. }), "{:?}", report.outcome);
    let frozen = report.decision.frozen.clone().expect("proposed because paused");
    assert!(
        frozen.contains("rollbackd:breaker")
            && frozen.contains("3 services alerting within 10m (ledger, payments, search), more than 2"),
        "{frozen}"
    );
    assert_eq!(w.head(), head, "nothing pushed past the breaker");
    let state = w.git(&["log", "-1", "--format=%B", "refs/rollbackd/state/freezes"]);
    assert!(state.starts_with("Pause: automatic rollbacks paused until") && state.contains("breaker"), "{state}");

    // The first replica honours it too, and `status` says so.
    let report = alert(&mut one, &w, "email", "a4");
    assert!(matches!(report.outcome, Outcome::Proposed { .. }), "{:?}", report.outcome);
    let text = one.status(None).unwrap();
    assert!(text.contains("paused until") && text.contains("blast-radius breaker"), "{text}");

    // A person resumes: the count starts afresh, so the next alert is pushed.
    assert_eq!(one.resume(&Actor::cli("ops"), None).unwrap(), "automatic rollbacks resumed by cli:ops");
    w.clock.advance(SignedDuration::from_secs(30));
    let report = alert(&mut w.engine(), &w, "email", "a5");
    assert!(pushed(&report), "{:?}", report.outcome);
}

#[test]
fn the_pause_ends_with_the_window() {
    let w = world();
    let mut engine = w.engine();
    assert!(pushed(&alert(&mut engine, &w, "search", "b1")));
    assert!(pushed(&alert(&mut engine, &w, "payments", "b2")));
    assert!(matches!(alert(&mut engine, &w, "ledger", "b3").outcome, Outcome::Proposed { .. }));
    w.clock.advance(SignedDuration::from_mins(11));
    let report = alert(&mut engine, &w, "email", "b4");
    assert!(pushed(&report), "{:?} {:?}", report.outcome, report.decision.frozen);
}

#[test]
fn people_and_one_service_alerting_repeatedly_do_not_trip_it() {
    let w = world();
    let mut engine = w.engine();
    for (i, s) in ["search", "payments"].iter().enumerate() {
        assert!(pushed(&alert(&mut engine, &w, s, &format!("c{i}"))));
    }
    // The same services again, and a person's requests for two more.
    for fp in ["c3", "c4"] {
        alert(&mut engine, &w, "search", fp);
    }
    for s in ["ledger", "email"] {
        let report = engine.handle(&w.request(s, "prod", &format!("req-{s}")), &Options::default()).unwrap();
        assert!(pushed(&report), "{s}: {:?}", report.outcome);
    }
    assert!(w.git(&["for-each-ref", "refs/rollbackd/state/freezes"]).is_empty(), "never paused");
}
