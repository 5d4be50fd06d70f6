//! Property tests for everything that reads untrusted input: webhook bodies, headers, matchers,
//! trailers. The property is always at least "never panics"; where there is a round trip, it holds.

use std::collections::BTreeMap;

use jiff::Timestamp;
use proptest::prelude::*;
use rollbackd::parsers::{self, Matcher, SecretString, Trailers};

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A recorded payload with one value somewhere replaced by arbitrary JSON.
fn mutate(mut v: serde_json::Value, path: &[String], with: serde_json::Value) -> serde_json::Value {
    // The longest prefix of `path` that exists is the place replaced.
    let mut pointer = String::new();
    for key in path {
        let next = format!("{pointer}/{key}");
        if v.pointer(&next).is_none() {
            break;
        }
        pointer = next;
    }
    if let Some(slot) = v.pointer_mut(&pointer) {
        *slot = with;
    }
    v
}

fn fixture(name: &str) -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github").join(name);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn alertmanager_parse_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parsers::alertmanager(&body, Timestamp::UNIX_EPOCH);
    }

    #[test]
    fn alertmanager_parse_never_panics_on_json(v in arb_json()) {
        let _ = parsers::alertmanager(v.to_string().as_bytes(), Timestamp::UNIX_EPOCH);
    }

    #[test]
    fn alertmanager_alerts_become_one_event_each(
        alerts in prop::collection::vec((
            prop::collection::btree_map("[a-z]{1,8}", ".{0,16}", 0..5),
            any::<bool>(),
            0i64..2_000_000_000,
            "[0-9a-f]{0,16}",
        ), 0..8)
    ) {
        let body = serde_json::json!({
            "version": "4",
            "alerts": alerts.iter().map(|(labels, firing, t, fp)| serde_json::json!({
                "status": if *firing { "firing" } else { "resolved" },
                "labels": labels,
                "startsAt": Timestamp::from_second(*t).unwrap().to_string(),
                "fingerprint": fp,
            })).collect::<Vec<_>>(),
        });
        let n = parsers::alertmanager(body.to_string().as_bytes(), Timestamp::UNIX_EPOCH).unwrap();
        let firing = alerts.iter().filter(|a| a.1).count();
        prop_assert_eq!(n.firing.len(), firing);
        prop_assert_eq!(n.resolved.len(), alerts.len() - firing);
        for e in &n.firing {
            prop_assert!(!e.dedupe_key.is_empty());
        }
    }

    #[test]
    fn github_parse_never_panics(
        event in prop_oneof![
            Just("ping".to_string()), Just("workflow_run".to_string()), Just("check_suite".to_string()),
            Just("deployment_status".to_string()), Just("push".to_string()), ".{0,12}"
        ],
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = parsers::github(&event, &body, &["deploy".to_string()], Timestamp::UNIX_EPOCH);
    }

    #[test]
    fn github_parse_never_panics_on_mutated_recordings(
        which in 0usize..3,
        path in prop::collection::vec(prop_oneof![
            Just("workflow_run".to_string()), Just("deployment".to_string()), Just("deployment_status".to_string()),
            Just("check_suite".to_string()), Just("conclusion".to_string()), Just("head_sha".to_string()),
            Just("state".to_string()), Just("payload".to_string()), Just("id".to_string()), Just("name".to_string()),
            Just("created_at".to_string()), Just("repository".to_string()),
        ], 0..4),
        with in arb_json(),
    ) {
        let (event, file) = [
            ("workflow_run", "workflow_run.completed.payload.json"),
            ("deployment_status", "deployment_status.payload.json"),
            ("check_suite", "check_suite.completed.payload.json"),
        ][which];
        let body = mutate(fixture(file), &path, with).to_string();
        let _ = parsers::github(event, body.as_bytes(), &["deploy".to_string()], Timestamp::UNIX_EPOCH);
    }

    #[test]
    fn matcher_parse_never_panics_and_round_trips(s in ".{0,40}") {
        if let Ok(m) = s.parse::<Matcher>() {
            let again: Matcher = m.to_string().parse().unwrap();
            prop_assert_eq!(&again.name, &m.name);
            prop_assert_eq!(again.op, m.op);
            prop_assert_eq!(&again.value, &m.value);
            let labels: BTreeMap<String, String> = BTreeMap::new();
            let _ = m.matches(&labels);
        }
    }

    #[test]
    fn auth_never_panics(header in ".{0,80}", body in prop::collection::vec(any::<u8>(), 0..64)) {
        let s = [SecretString::new("secret")];
        prop_assert!(!parsers::bearer(Some(&header), &[]));
        let _ = parsers::bearer(Some(&header), &s);
        let _ = parsers::basic(Some(&header), "am", &s);
        let _ = parsers::github_signature(Some(&header), &body, &s);
    }

    #[test]
    fn trailers_round_trip(
        id in "rb-[0-9a-f]{12}", service in "[a-z][a-z0-9-]{0,20}", env in "[a-z]{1,10}",
        of in prop::collection::vec("[0-9a-f]{40}", 1..5), reason in proptest::option::of("[ -~]{1,60}"),
        trigger in "[a-z]{2,12}:[!-~]{1,40}", actor in "[!-~]{0,20}", policy in "[a-z-]{0,12}",
        phase in proptest::option::of((1u32..=10, 0u32..10)),
        started in proptest::option::of(0i64..4_000_000_000), received in proptest::option::of(0i64..4_000_000_000),
    ) {
        let t = Trailers {
            id, service, env, of, to: "a".repeat(40), policy, trigger, actor,
            reason: reason.map(|r| r.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|r| !r.is_empty()),
            strategy: "revert".into(), emergency: false,
            phase: phase.and_then(|(of, k)| parsers::Phase::new(k % of + 1, of)),
            also: Vec::new(), because: Vec::new(),
            alert_started: started.map(|s| jiff::Timestamp::from_second(s).unwrap()),
            received: received.map(|s| jiff::Timestamp::from_second(s).unwrap()),
        };
        let msg = t.append_to("Roll back\n\nbody\n");
        prop_assert_eq!(Trailers::parse(&msg), Some(t));
    }

    #[test]
    fn trailers_parse_never_panics(s in ".{0,200}") {
        let _ = Trailers::parse(&s);
        let _ = Trailers::parse(&format!("x\n\nRollback-Id: {s}\n"));
    }

    #[test]
    fn artifact_scan_never_panics(s in "[ -~\n]{0,300}") {
        let _ = rollbackd::parsers::artifacts(&s);
    }
}
