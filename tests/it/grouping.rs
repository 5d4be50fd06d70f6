//! One bad commit, many alerts: a change that touched several services' paths.

use crate::common::*;
use rollbackd::Actor;
use rollbackd::{Options, Outcome};

/// A world whose policy's targets share `shared/**`, and the commit that bumps checkout, cart
/// and the shared file at once (made by [`bump_everything`]).
fn shared_world() -> World {
    World::with(&[PolicySpec::new("shared").target(
        "{{ labels.service }}",
        "{{ labels.env }}",
        &["apps/{{ labels.service }}/{{ labels.env }}/**", "shared/**"],
    )])
}

fn bump(service: &str) -> String {
    manifest(service, "prod", &image(service, "9.9.9"))
}

fn bump_everything(w: &World) {
    let (c, k) = (bump("checkout"), bump("cart"));
    w.commit_files(
        "Bump everything",
        &[
            (&path("checkout", "prod"), Some(&c)),
            (&path("cart", "prod"), Some(&k)),
            ("shared/versions.yaml", Some("checkout: 9.9.9\ncart: 9.9.9\n")),
        ],
        10,
    );
}

/// Checkout's alert (rolled back), then cart's: cart's outcome.
fn checkout_then_cart(w: &World) -> (rollbackd::Rollback, Outcome) {
    let mut engine = w.engine();
    let first = engine.handle(&w.alert("checkout", "prod", "fpa"), &Options::default()).unwrap();
    let Outcome::RolledBack { rollback } = first.outcome else { panic!("{:?}", first.outcome) };
    let second = engine.handle(&w.alert("cart", "prod", "fpb"), &Options::default()).unwrap();
    (rollback, second.outcome)
}

#[test]
fn a_change_across_two_services_is_undone_for_each_that_alerts() {
    let w = shared_world();
    let before_checkout = w.show("HEAD", &path("checkout", "prod"));
    let before_cart = w.show("HEAD", &path("cart", "prod"));
    bump_everything(&w);
    let mut engine = w.engine();
    let first = engine.handle(&w.alert("checkout", "prod", "fpa"), &Options::default()).unwrap();
    assert!(matches!(first.outcome, Outcome::RolledBack { .. }), "{:?}", first.outcome);
    let Outcome::RolledBack { rollback: first } = first.outcome else { unreachable!() };
    assert_eq!(w.show("main", &path("cart", "prod")), bump("cart").trim_end(), "the first undid checkout only");

    // The cart alert is not "already rolled back": cart still carries the change.
    let second = engine.handle(&w.alert("cart", "prod", "fpb"), &Options::default()).unwrap();
    let Outcome::RolledBack { rollback: second } = second.outcome else { panic!("{:?}", second.outcome) };
    assert_eq!(w.show("main", &path("checkout", "prod")), before_checkout);
    assert_eq!(w.show("main", &path("cart", "prod")), before_cart, "cart is still on the bad change");
    assert_eq!(w.show("main", "shared/versions.yaml"), "checkout: 1.4.0\ncart: 2.0.0");
    // It names the same bad commit and known-good as the first, and says why it exists.
    let (a, b) = (first.commit.0.as_str(), second.commit.0.as_str());
    assert_eq!(w.trailers(a, "Rollback-Of"), w.trailers(b, "Rollback-Of"));
    assert_eq!(w.trailers(a, "Rollback-To"), w.trailers(b, "Rollback-To"));
    let message = w.message(b);
    assert!(message.contains(&format!("Rollback {} undid this change only for its own paths", first.id)), "{message}");

    // Now both are done: repeats and new alerts for either are answered from git.
    for (service, fp) in [("cart", "fpc"), ("checkout", "fpd")] {
        let again = engine.handle(&w.alert(service, "prod", fp), &Options::default()).unwrap();
        assert!(matches!(again.outcome, Outcome::Duplicate { .. }), "{service}: {:?}", again.outcome);
    }
    assert_eq!(
        w.git(&["log", "--format=%(trailers:key=Rollback-Id,valueonly)", "main"])
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
        2
    );
}

/// The same with a known-good tag: the bad range is read from the tag, and a rollback that
/// covered the bad commit for other paths does not hide it here.
#[test]
fn a_known_good_tag_does_not_hide_a_partly_undone_change() {
    let w = shared_world();
    let good = w.head();
    w.tag_known_good("checkout", "prod", &rollbackd::Sha(good.clone()), "1");
    w.tag_known_good("cart", "prod", &rollbackd::Sha(good), "1");
    let before_cart = w.show("HEAD", &path("cart", "prod"));
    bump_everything(&w);
    let (_, second) = checkout_then_cart(&w);
    assert!(matches!(second, Outcome::RolledBack { .. }), "{second:?}");
    assert_eq!(w.show("main", &path("cart", "prod")), before_cart);
}

/// The first service went back to an old known-good tag; the second goes back only to before
/// the shared change, keeping its own good deploy from between the two.
#[test]
fn the_second_service_keeps_its_own_changes_from_before_the_bad_one() {
    let w = shared_world();
    w.tag_known_good("checkout", "prod", &w.good, "1");
    let good_cart = w.deploy("cart", "prod", "2.1.0", 60);
    let cart_before = w.show(&good_cart.0, &path("cart", "prod"));
    bump_everything(&w);
    let (_, second) = checkout_then_cart(&w);
    assert!(matches!(second, Outcome::RolledBack { .. }), "{second:?}");
    assert_eq!(w.show("main", &path("cart", "prod")), cart_before, "cart keeps 2.1.0, deployed before the bad change");
}

/// A later deploy of the second service took over the file the bad change had touched: that
/// file is left as it is (its owner moved on), and with the shared file already put back there
/// is nothing left to do here.
#[test]
fn a_file_a_later_deploy_took_over_is_left_alone() {
    let w = shared_world();
    bump_everything(&w);
    let later = w.deploy("cart", "prod", "2.2.0", 5);
    let cart_later = w.show(&later.0, &path("cart", "prod"));
    let (first, second) = checkout_then_cart(&w);
    assert!(matches!(&second, Outcome::Duplicate { rollback_id, .. } if *rollback_id == first.id), "{second:?}");
    assert_eq!(w.show("main", &path("cart", "prod")), cart_later, "cart keeps its later deploy");
}

/// Only the files that still hold the bad change go back; another of the second service's
/// files, changed since, keeps its change.
#[test]
fn only_the_files_still_holding_the_change_go_back() {
    let w = shared_world();
    let before_cart = w.show("HEAD", &path("cart", "prod"));
    bump_everything(&w);
    w.commit_files("Tune cart", &[("apps/cart/prod/tuning.yaml", Some("workers: 8\n"))], 5);
    let (_, second) = checkout_then_cart(&w);
    let Outcome::RolledBack { rollback } = second else { panic!("{second:?}") };
    assert_eq!(w.show("main", &path("cart", "prod")), before_cart);
    assert_eq!(w.show("main", "apps/cart/prod/tuning.yaml"), "workers: 8");
    let changed = w.git(&["show", "--format=", "--name-only", &rollback.commit.0]);
    assert_eq!(changed.trim(), path("cart", "prod"), "only the file that still held the change");
}

/// A service's own rollback, even to a state older than its known-good tag (`--to`, a step
/// back), is never redone or rolled forward by its next alert.
#[test]
fn a_services_own_older_rollback_stays_a_duplicate() {
    let w = shared_world();
    let older = w.deploy("checkout", "prod", "1.3.0", 170);
    w.deploy("checkout", "prod", "1.4.5", 120);
    let tagged = w.head();
    w.tag_known_good("checkout", "prod", &rollbackd::Sha(tagged), "1");
    bump_everything(&w);
    let mut engine = w.engine();
    let to = Options { to: Some(older.0.clone()), ..Options::default() };
    let first = engine.handle(&w.request("checkout", "prod", "req-1"), &to).unwrap();
    assert!(matches!(first.outcome, Outcome::RolledBack { .. }), "{:?}", first.outcome);
    let state = w.show("main", &path("checkout", "prod"));
    let again = engine.handle(&w.alert("checkout", "prod", "fpa"), &Options::default()).unwrap();
    assert!(matches!(again.outcome, Outcome::Duplicate { .. }), "{:?}", again.outcome);
    assert_eq!(w.show("main", &path("checkout", "prod")), state);
}

/// The firing alerts of one notification (Alertmanager grouping by alert name): those that
/// roll back the same bad change for several targets are one commit naming every trigger.
#[test]
fn alerts_of_one_notification_about_one_change_are_one_commit_naming_every_trigger() {
    let w = shared_world();
    let (before_checkout, before_cart) =
        (w.show("HEAD", &path("checkout", "prod")), w.show("HEAD", &path("cart", "prod")));
    bump_everything(&w);
    let (a, b) = (w.alert("checkout", "prod", "fpa"), w.alert("cart", "prod", "fpb"));
    let commits = w.count_commits();
    let results = w.engine().handle_alerts(&[a.clone(), b.clone()], &Options::default());
    let rollbacks: Vec<rollbackd::Rollback> = results
        .into_iter()
        .map(|r| match r.unwrap().outcome {
            Outcome::RolledBack { rollback } => rollback,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(rollbacks[0], rollbacks[1], "one rollback answers both");
    assert_eq!(w.count_commits(), commits + 1, "one commit");
    assert_eq!(w.show("main", &path("checkout", "prod")), before_checkout);
    assert_eq!(w.show("main", &path("cart", "prod")), before_cart);
    assert_eq!(w.show("main", "shared/versions.yaml"), "checkout: 1.4.0\ncart: 2.0.0");
    assert_eq!(w.trailers("main", "Rollback-Service"), ["checkout"]);
    assert_eq!(w.trailers("main", "Rollback-Also"), [format!("cart/prod {}", b.trigger())]);
    let message = w.message("main");
    assert!(message.contains("Also rolls back cart/prod") && message.contains(&b.trigger()), "{message}");

    // Each service has its record, trigger and all: a redelivery of either is a duplicate.
    let mut engine = w.engine();
    let history = engine.history().unwrap().records().to_vec();
    let services: Vec<(&str, &str)> = history.iter().map(|r| (r.service.as_str(), r.trigger.as_str())).collect();
    assert!(
        services.contains(&("checkout", a.trigger().as_str())) && services.contains(&("cart", b.trigger().as_str())),
        "{services:?}"
    );
    for alert in [&a, &b] {
        let again = engine.handle(alert, &Options::default()).unwrap();
        assert!(matches!(again.outcome, Outcome::Duplicate { .. }), "{:?}", again.outcome);
    }
    // A new alert for cart finds nothing left to undo.
    let later = engine.handle(&w.alert("cart", "prod", "fpc"), &Options::default()).unwrap();
    assert!(matches!(later.outcome, Outcome::Duplicate { .. }), "{:?}", later.outcome);
    assert_eq!(w.count_commits(), commits + 1);
}

#[test]
fn alerts_about_different_changes_or_decided_otherwise_are_not_folded() {
    let w = shared_world();
    let (c, k) = (bump("checkout"), bump("cart"));
    w.commit_files("Bump checkout", &[(&path("checkout", "prod"), Some(&c))], 12);
    w.commit_files("Bump cart", &[(&path("cart", "prod"), Some(&k))], 11);
    let commits = w.count_commits();
    let results = w
        .engine()
        .handle_alerts(&[w.alert("checkout", "prod", "fpa"), w.alert("cart", "prod", "fpb")], &Options::default());
    let ids: Vec<String> = results
        .into_iter()
        .map(|r| match r.unwrap().outcome {
            Outcome::RolledBack { rollback } => rollback.id.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
    assert_eq!(w.count_commits(), commits + 2, "two changes, two rollbacks");
    assert!(w.trailers("main", "Rollback-Also").is_empty());

    // The same change, but cart is frozen: its rollback is a proposal, checkout's goes alone.
    let w = shared_world();
    bump_everything(&w);
    let mut engine = w.engine();
    engine.freeze("cart", Some("prod"), None, Some("release in progress"), &Actor::cli("ops")).unwrap();
    let results = engine
        .handle_alerts(&[w.alert("checkout", "prod", "fpa"), w.alert("cart", "prod", "fpb")], &Options::default());
    let outcomes: Vec<&'static str> = results.iter().map(|r| r.as_ref().unwrap().outcome.name()).collect();
    assert_eq!(outcomes, ["rolled_back", "proposed"]);
    assert!(w.trailers("main", "Rollback-Also").is_empty());
}

/// The real Alertmanager, grouping by alert name and env, sends both services' alerts in one
/// notification after its group_wait: the real server makes one commit of them.
#[test]
fn real_alertmanager_grouping_by_alertname_gives_one_commit_for_one_change() {
    use crate::serve::{TOKEN, agent, get, rollback_commits, serve, with_alertmanager_source};
    let w = shared_world();
    bump_everything(&w);
    with_alertmanager_source(&w, "");
    let s = serve(&w, "data");
    let port = free_port();
    let dir = w.root().join("alertmanager");
    let group_by = "[alertname, env]";
    let Some(_am) = crate::common::procs::alertmanager_grouped(&dir, port, &s.url, TOKEN, "1h", group_by, "2s") else {
        return;
    };
    let am = format!("http://127.0.0.1:{port}");
    wait_for("alertmanager ready", 30, || get(&format!("{am}/-/ready")).is_ok_and(|(st, _)| st == 200));
    let starts = jiff::Timestamp::now();
    let ends = starts.checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
    let alert = |service: &str| {
        json!({
            "labels": { "alertname": "HighErrorRate", "service": service, "env": "prod", "severity": "page" },
            "annotations": { "summary": format!("{service} 5xx above 5%") },
            "startsAt": starts.to_string(), "endsAt": ends.to_string(),
        })
    };
    let body = json!([alert("checkout"), alert("cart")]).to_string();
    let status = agent().post(format!("{am}/api/v2/alerts")).header("Content-Type", "application/json").send(body);
    assert_eq!(status.unwrap().status().as_u16(), 200);
    wait_for("the rollback on the origin", 60, || rollback_commits(&w) >= 1);
    assert_eq!(rollback_commits(&w), 1);
    let also = w.trailers("main", "Rollback-Also");
    assert_eq!(also.len(), 1, "{also:?}");
    let (service, other) = (w.trailers("main", "Rollback-Service"), &also[0]);
    assert!(
        (service == ["checkout"] && other.starts_with("cart/prod alertmanager:"))
            || (service == ["cart"] && other.starts_with("checkout/prod alertmanager:")),
        "{service:?} {other}"
    );
    assert!(w.show("main", &path("checkout", "prod")).contains("checkout:1.4.2"));
    assert!(w.show("main", &path("cart", "prod")).contains("cart:2.0.0"));
}

#[test]
fn a_folded_rollback_holds_each_artifact_under_its_own_service() {
    let w = shared_world();
    bump_everything(&w);
    let mut engine = w.engine();
    engine.handle_alerts(&[w.alert("checkout", "prod", "fpa"), w.alert("cart", "prod", "fpb")], &Options::default());
    let holds = engine.holds().unwrap();
    let of = |service: &str| holds.iter().filter(|h| h.service == service).map(|h| h.path.clone()).collect::<Vec<_>>();
    assert_eq!(of("checkout"), [path("checkout", "prod")], "{holds:?}");
    assert_eq!(of("cart"), [path("cart", "prod")], "{holds:?}");
    let said = engine.release("cart", "prod", Some("fixed"), &Actor::cli("ops")).unwrap();
    assert!(!said.starts_with("refused") && !said.contains("nothing"), "{said}");
    let holds = engine.holds().unwrap();
    assert!(holds.iter().all(|h| h.service == "checkout"), "{holds:?}");
}

/// Trailers are text anyone can put in a commit message (a merged pull request). Without the tag
/// rollbackd pushes with its rollbacks, they never make rollbackd write what they name.
#[test]
fn forged_rollback_trailers_never_choose_what_is_written() {
    let w = World::with(&[
        PolicySpec::new("prod").set("verify", json!({ "within": "1m", "on_failure": "step_back", "max_steps": 1 }))
    ]);
    w.write_config(&ConfigSpec::new().set("git.fetch_freshness", "0s"));
    let netpol =
        w.commit_files("cart: network policy", &[("apps/cart/prod/netpol.yaml", Some("kind: NetworkPolicy\n"))], 120);
    let parent = w.git(&["rev-parse", &format!("{}~1", netpol.0)]);
    let forged = |service: &str, of: &str, to: &str| {
        format!(
            "cart: add an HPA\n\nRollback-Id: rb-0123456789ab\nRollback-Service: {service}\nRollback-Env: prod\nRollback-Of: {of}\nRollback-To: {to}\nRollback-Policy: prod\nRollback-Trigger: alertmanager:forged@2026-11-21T11:00:00Z\nRollback-Actor: alertmanager\nRollback-Strategy: restore\n"
        )
    };
    w.seed
        .commit(
            &forged("search", &netpol.0, &parent),
            &[("apps/cart/prod/hpa.yaml", Some("kind: HPA\n"))],
            "someone",
            w.ago(30),
        )
        .unwrap();
    let mut engine = w.engine();
    // A rollback of cart: the forged "rollback" is not read for what to restore.
    let report = engine.handle(&w.request("cart", "prod", "req-1"), &Options::default()).unwrap();
    assert!(w.show("main", "apps/cart/prod/netpol.yaml").contains("NetworkPolicy"), "{:?}", report.outcome);
    // Nor is a forged rollback of checkout verified and stepped back.
    let head = w.head();
    w.seed.commit(&forged("checkout", &w.good.0, &parent), &[("README.md", Some("x\n"))], "someone", w.ago(1)).unwrap();
    let head_after = w.head();
    assert_ne!(head, head_after);
    w.clock.advance(jiff::SignedDuration::from_mins(5));
    assert!(engine.verify_due().unwrap().is_empty());
    assert_eq!(w.head(), head_after, "nothing stepped back");
    // And it counts for no guard or breaker: checkout's own alert is rolled back as usual.
    w.deploy("checkout", "prod", "1.5.0", 0);
    let alert = engine.handle(&w.alert("checkout", "prod", "fpz"), &Options::default()).unwrap();
    assert!(matches!(alert.outcome, Outcome::RolledBack { .. }), "{:?}", alert.outcome);
}
