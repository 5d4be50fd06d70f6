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

/// A CODEOWNERS line made of the characters its syntax gives meaning to.
fn arb_codeowners_line() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("*".to_string()),
        Just("**".to_string()),
        Just("?".to_string()),
        Just("/".to_string()),
        Just("\\".to_string()),
        Just("!".to_string()),
        Just("#".to_string()),
        Just(" ".to_string()),
        Just("@".to_string()),
        Just("[a]".to_string()),
        "[a-c]{1,3}",
        ".{0,3}",
    ];
    prop::collection::vec(piece, 0..16).prop_map(|p| p.concat())
}

proptest! {
    /// Whatever anyone with push access writes into CODEOWNERS: read without panicking, every
    /// line a rule or a skip with its reason, and any path asked about without panicking.
    #[test]
    fn codeowners_never_panics_and_accounts_for_every_line(
        lines in prop::collection::vec(arb_codeowners_line(), 0..24),
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        path in "[a-c*?/]{0,24}",
    ) {
        use parsers::codeowners::{Codeowners, Pattern};
        let text = lines.join("\n");
        let c = Codeowners::parse("CODEOWNERS", text.as_bytes()).expect("under the bound");
        let meaningful = text.lines().filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#')).count();
        prop_assert_eq!(c.rules.len() + c.skipped.len(), meaningful);
        let _ = c.owners_of(&path);
        let _ = Codeowners::parse("CODEOWNERS", &bytes).map(|c| c.owners_of(&path).len());
        for l in &lines {
            if let Ok(p) = Pattern::parse(l.split_whitespace().next().unwrap_or_default()) {
                let _ = p.matches(&path);
            }
        }
    }

    /// A rule for a literal path owns exactly that path and what is below it, whatever else the
    /// path holds.
    #[test]
    fn a_literal_anchored_pattern_owns_its_subtree(dir in "[a-z]{1,8}(/[a-z]{1,8}){0,3}", rest in "[a-z]{1,8}(/[a-z]{1,8}){0,2}") {
        use parsers::codeowners::Pattern;
        let p = Pattern::parse(&format!("/{dir}/")).unwrap();
        let inside = format!("{dir}/{rest}");
        let beside = format!("{dir}x/{rest}");
        prop_assert!(p.matches(&inside));
        prop_assert!(!p.matches(&dir));
        prop_assert!(!p.matches(&beside));
    }
}

fn controller_fixture(name: &str) -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The labels a controller event may carry: the parser's own and at most 16 from metadata.
fn check_controller_event(parsed: &parsers::ControllerEvent) -> Result<(), TestCaseError> {
    if let parsers::ControllerEvent::Failed(e) | parsers::ControllerEvent::Healthy(e) = parsed {
        let sha = e.labels.get("sha").expect("a controller event names its commit");
        prop_assert!(sha.len() == 40 || sha.len() == 64);
        prop_assert!(sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(e.applied_revision(), Some(sha.as_str()));
        prop_assert!(e.labels.len() <= 10 + 16, "{} labels", e.labels.len());
        prop_assert!(e.annotations.values().all(|v| v.len() <= 256 + "…".len()));
        prop_assert!(!e.dedupe_key.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn flux_parse_never_panics_and_bounds_what_it_accepts(
        body in prop::collection::vec(any::<u8>(), 0..512),
        v in arb_json(),
        path in prop::collection::vec(prop_oneof![
            Just("involvedObject".to_string()), Just("kind".to_string()), Just("metadata".to_string()),
            Just("revision".to_string()), Just("severity".to_string()), Just("reason".to_string()),
            "[a-z]{1,8}".prop_map(String::from),
        ], 0..3),
    ) {
        let _ = parsers::flux(&body, Timestamp::UNIX_EPOCH);
        if let Ok(p) = parsers::flux(v.to_string().as_bytes(), Timestamp::UNIX_EPOCH) {
            check_controller_event(&p)?;
        }
        let mutated = mutate(controller_fixture("flux/kustomization-health-check-failed.json"), &path, v);
        if let Ok(p) = parsers::flux(mutated.to_string().as_bytes(), Timestamp::UNIX_EPOCH) {
            check_controller_event(&p)?;
        }
    }

    #[test]
    fn argocd_parse_never_panics_and_bounds_what_it_accepts(
        body in prop::collection::vec(any::<u8>(), 0..512),
        v in arb_json(),
        key in prop_oneof![Just("app"), Just("revision"), Just("health"), Just("sync"), Just("phase"), Just("message"), Just("other")],
    ) {
        let _ = parsers::argocd(&body, Timestamp::UNIX_EPOCH);
        if let Ok(p) = parsers::argocd(v.to_string().as_bytes(), Timestamp::UNIX_EPOCH) {
            check_controller_event(&p)?;
        }
        let mutated = mutate(controller_fixture("argocd/health-degraded.json"), &[key.to_string()], v);
        if let Ok(p) = parsers::argocd(mutated.to_string().as_bytes(), Timestamp::UNIX_EPOCH) {
            check_controller_event(&p)?;
        }
    }

    /// Both revision forms Flux writes, on any branch name, give the commit back; a short id or
    /// another digest never passes for one.
    #[test]
    fn controller_revisions_round_trip(branch in "[a-z][a-z0-9._/-]{0,30}", sha in "[0-9a-f]{40}", short in "[0-9a-f]{1,39}") {
        prop_assert_eq!(parsers::controller_revision(&format!("{branch}@sha1:{sha}")), Some(sha.clone()));
        prop_assert_eq!(parsers::controller_revision(&format!("{branch}/{sha}")), Some(sha.clone()));
        prop_assert_eq!(parsers::controller_revision(&format!("{branch}@sha1:{short}")), None);
        prop_assert_eq!(parsers::controller_revision(&format!("{branch}@sha256:{sha}{sha}")), None);
    }

    /// Flux's signature is checked like GitHub's: only the key that signed the body passes.
    #[test]
    fn flux_signature_holds_only_for_the_signing_key(body in prop::collection::vec(any::<u8>(), 0..256), key in "[a-z0-9]{8,40}", other in "[A-Z]{8}") {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(&body);
        let sig = format!("sha256={}", mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>());
        prop_assert!(parsers::flux_signature(Some(&sig), &body, &[SecretString::new(other.clone()), SecretString::new(key)]));
        prop_assert!(!parsers::flux_signature(Some(&sig), &body, &[SecretString::new(other)]));
    }
}
