use super::*;

/// A repository's directories, as `dirs` lists them.
fn tree(paths: &[&str]) -> impl FnMut(&str) -> Vec<String> {
    let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    move |dir: &str| {
        let mut out: Vec<String> = paths
            .iter()
            .filter_map(|p| {
                let rest = if dir.is_empty() { Some(p.as_str()) } else { p.strip_prefix(&format!("{dir}/")) };
                rest.and_then(|r| r.split('/').next()).map(str::to_string)
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn plain(v: &str) -> bool {
    v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn a_templated_target_expands_over_the_directories_that_match_it() {
    let mut dirs = tree(&["apps/checkout/prod/deploy.yaml", "apps/checkout/dev/x", "apps/cart/prod/y", "docs/z"]);
    let got = expand("apps/{{ labels.service }}/{{ labels.env }}/**", &BTreeMap::new(), &mut dirs, &plain).unwrap();
    assert_eq!(
        got,
        vec![
            labels(&[("env", "prod"), ("service", "cart")]),
            labels(&[("env", "dev"), ("service", "checkout")]),
            labels(&[("env", "prod"), ("service", "checkout")]),
        ]
    );
}

#[test]
fn a_label_an_equality_matcher_pins_keeps_only_that_directory() {
    let mut dirs = tree(&["apps/checkout/prod/a", "apps/checkout/dev/b", "apps/cart/dev/c"]);
    let pinned = labels(&[("env", "prod")]);
    let got = expand("apps/{{labels.service}}/{{ labels.env }}/**", &pinned, &mut dirs, &plain).unwrap();
    assert_eq!(got, vec![labels(&[("env", "prod"), ("service", "checkout")])]);
}

#[test]
fn directory_names_that_are_not_identifiers_name_no_target() {
    let mut dirs = tree(&["apps/ok/prod/a", "apps/b@d/prod/b", "apps/$(x)/prod/c"]);
    let got = expand("apps/{{ labels.service }}/prod/**", &BTreeMap::new(), &mut dirs, &plain).unwrap();
    assert_eq!(got, vec![labels(&[("service", "ok")])]);
}

#[test]
fn literal_text_around_a_label_is_matched() {
    let mut dirs = tree(&["clusters/prod-eu/a", "clusters/dev-eu/b", "clusters/other/c"]);
    let got = expand("clusters/{{ labels.env }}-eu/**", &BTreeMap::new(), &mut dirs, &plain).unwrap();
    assert_eq!(got, vec![labels(&[("env", "dev")]), labels(&[("env", "prod")])]);
}

#[test]
fn an_expression_other_than_a_label_is_said_not_guessed() {
    let mut dirs = tree(&["apps/a/b"]);
    let err = expand("apps/{{ labels.service | lower }}/**", &BTreeMap::new(), &mut dirs, &plain).unwrap_err();
    assert!(err.contains("only `{{ labels.NAME }}`"), "{err}");
}

#[test]
fn a_literal_target_is_one_target() {
    let mut dirs = tree(&[]);
    let got = expand("apps/checkout/prod/**", &BTreeMap::new(), &mut dirs, &plain).unwrap();
    assert_eq!(got, vec![BTreeMap::new()]);
}

#[test]
fn expansion_stops_at_the_bound() {
    let many: Vec<String> = (0..=MAX_TARGETS).map(|i| format!("apps/s{i}/x")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut dirs = tree(&refs);
    let err = expand("apps/{{ labels.service }}/**", &BTreeMap::new(), &mut dirs, &plain).unwrap_err();
    assert!(err.contains("more than 1000 directories"), "{err}");
}

#[test]
fn a_row_is_ready_until_a_reason_is_added_and_says_each() {
    let mut r = Readiness::new("checkout", "prod", Some("auto"), Some(Mode::Direct));
    assert!(r.ready);
    r.not_ready(Reason::ImageMissing("registry.local/checkout:1.4.0 is not in registry.local".into()));
    r.not_ready(Reason::ImageMissing("registry.local/checkout:1.4.0 is not in registry.local".into()));
    assert!(!r.ready);
    assert_eq!(r.reasons.len(), 1);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["reasons"][0], "image missing: registry.local/checkout:1.4.0 is not in registry.local");
    assert_eq!(json["known_good"], serde_json::Value::Null);
    assert_eq!(json["mode"], "direct");
    assert!(r.line().starts_with("checkout/prod"), "{}", r.line());
    assert!(r.line().contains("NOT READY"), "{}", r.line());
}

fn drill(ci: Option<CiVerdict>, policy: &str) -> DrillResult {
    DrillResult {
        service: "checkout".into(),
        env: "prod".into(),
        branch: "rollbackd/drill/checkout/prod".into(),
        commit: crate::domain::plan::Sha("1a2b3c4d5e".repeat(4)),
        at: jiff::Timestamp::UNIX_EPOCH,
        policy: Some(policy.into()),
        ci,
    }
}

#[test]
fn only_a_failed_drill_stands_in_the_way_and_pending_is_said_on_the_line() {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let verdict = CiVerdict::of(strings(&["build"]), strings(&["lint"]), strings(&["schema"]));
    assert_eq!(verdict, CiVerdict::Failed { checks: strings(&["build"]) });
    assert_eq!(CiVerdict::of(vec![], strings(&["lint"]), vec![]), CiVerdict::Pending { checks: strings(&["lint"]) });
    assert!(matches!(CiVerdict::of(vec![], vec![], vec![]), CiVerdict::Pending { .. }), "no check ran: not passed");
    assert_eq!(CiVerdict::of(vec![], vec![], strings(&["schema"])), CiVerdict::Passed);

    let mut row = Readiness::new("checkout", "prod", Some("p"), Some(Mode::Direct));
    row.drilled(drill(Some(CiVerdict::Pending { checks: strings(&["lint"]) }), "p"));
    assert!(row.ready && row.line().contains("[drill CI pending (lint)]"), "{}", row.line());
    row.drilled(drill(None, "q"));
    assert!(row.ready && row.line().contains("[drill, rehearsed under policy q]"), "{}", row.line());
    row.drilled(drill(Some(verdict), "p"));
    assert!(!row.ready);
    assert_eq!(row.reasons[0].name(), "drill_failed");
    assert!(row.reasons[0].to_string().starts_with("drill failed CI: build failed on rollbackd/drill/checkout/prod"));
}

#[test]
fn the_drill_policy_is_read_from_its_trailer() {
    let m = crate::domain::drill::message(
        "checkout",
        "prod",
        "alert-prod",
        &crate::domain::plan::Sha("a".repeat(40)),
        "revert",
        &[],
        jiff::Timestamp::UNIX_EPOCH,
    );
    assert_eq!(crate::domain::drill::policy_of(&m).as_deref(), Some("alert-prod"));
    assert_eq!(crate::domain::drill::policy_of("no trailers"), None);
}
