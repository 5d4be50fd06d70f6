//! Horizontal scale stays git-native: replicas share nothing but the origin, and its
//! compare-and-swap makes one commit per incident however many replicas are sent it.

use crate::common::net::SmartHttp;
use crate::common::*;
use rollbackd::{Options, Outcome};

const INCIDENTS: usize = 8;

/// Three replicas, each sent every incident of a storm (as Alertmanager HA pairs and a load
/// balancer do), in its own order, pushing to one origin over smart HTTP.
#[test]
fn three_replicas_under_a_storm_make_exactly_one_commit_per_incident() {
    let w = World::new();
    // A storm of distinct services is what the breaker is for; here it is the load.
    w.write_config(&ConfigSpec::new().set("pause.breaker.max_services", 0));
    let services: Vec<String> = (0..INCIDENTS).map(|i| format!("svc{i}")).collect();
    for s in &services {
        w.deploy(s, "prod", "1.0.0", 120);
    }
    for s in &services {
        w.deploy(s, "prod", "1.1.0", 10);
    }
    let git = SmartHttp::start(w.root().to_path_buf());
    let cfg = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace("url: origin.git", &format!("url: http://{}/origin.git", git.addr));
    std::fs::write(w.config_path(), cfg).unwrap();
    let before = w.count_commits();
    let alerts: Vec<_> = services.iter().map(|s| w.alert(s, "prod", &format!("fp-{s}"))).collect();

    let barrier = std::sync::Barrier::new(3);
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|r| {
                let mut engine = w.replica(&format!("replica-{r}"));
                let (alerts, barrier) = (&alerts, &barrier);
                scope.spawn(move || {
                    engine.repo().fetch_now().unwrap();
                    barrier.wait();
                    // Each replica in its own order: the races differ from incident to incident.
                    (0..INCIDENTS)
                        .map(|i| alerts[(i * (r + 1) + r) % INCIDENTS].clone())
                        .map(|a| {
                            // A writer that keeps losing races gives up with a transient error
                            // (503 at the edge), and the sender sends the alert again.
                            let mut tries = 0;
                            loop {
                                match engine.handle(&a, &Options::default()) {
                                    Ok(report) => break report.outcome,
                                    Err(e) if e.is_transient() && tries < 10 => tries += 1,
                                    Err(e) => panic!("replica {r}: {e}"),
                                }
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });

    assert_eq!(w.count_commits(), before + INCIDENTS, "{outcomes:?}");
    // Every answer is the incident's one rollback. A replica whose push landed but whose answer
    // was lost on the way (stateless HTTP under load) reports a transient error; the sender's
    // retry then hears "duplicate" of that same rollback, so there may be fewer "rolled back".
    let rolled_back = outcomes.iter().filter(|o| matches!(o, Outcome::RolledBack { .. })).count();
    let duplicates = outcomes.iter().filter(|o| matches!(o, Outcome::Duplicate { .. })).count();
    assert_eq!(rolled_back + duplicates, 3 * INCIDENTS, "{outcomes:?}");
    assert!(rolled_back <= INCIDENTS, "{outcomes:?}");
    let ids: std::collections::HashSet<String> =
        outcomes.iter().filter_map(|o| o.rollback_id().map(|i| i.to_string())).collect();
    assert_eq!(ids.len(), INCIDENTS, "one rollback id per incident: {outcomes:?}");
    let mut triggers = w.git(&["log", "--format=%(trailers:key=Rollback-Trigger,valueonly)", "main"]);
    triggers = triggers.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n");
    let mut seen: Vec<&str> = triggers.lines().collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), INCIDENTS, "one commit per incident: {triggers}");

    // What the races cost: every push attempt reads the receive-pack advertisement once; the
    // attempts beyond one per incident lost a race and were retried or turned into duplicates.
    let served = git.requests.lock().unwrap().clone();
    let attempts = served.iter().filter(|r| r.contains("info/refs?service=git-receive-pack")).count();
    let packs = served.iter().filter(|r| r.starts_with("POST") && r.contains("git-receive-pack")).count();
    eprintln!(
        "3 replicas, {INCIDENTS} incidents: {attempts} push attempts, {packs} packs sent, \
         {:.2} lost races per incident",
        (attempts - INCIDENTS) as f64 / INCIDENTS as f64
    );
    assert!(packs >= INCIDENTS);
}
