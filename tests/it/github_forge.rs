//! Proposals as pull requests on a fake GitHub backed by the real bare origin: the PR and its
//! title, body, labels and reviewers; "fired again"; approval, refusal and self-approval from PR
//! comments; cancel; and a PR merged by hand.

use crate::common::fake_github::{FakeGithub, TOKEN};
use crate::common::*;
use rollbackd::github_comment;
use rollbackd::parsers::Comment;
use rollbackd::{Directory, Principal};
use rollbackd::{Options, Outcome};

/// Prod through reviewed pull requests, with chat roles and reviewers.
pub(super) fn policy(merge: &str) -> PolicySpec {
    PolicySpec::new("prod")
        .prod_only()
        .mode(Mode::PullRequest)
        .set("guards", json!({ "cooldown": "30m", "require_immutable_artifacts": true }))
        .chatops("allow", &["github-team:acme/sre"])
        .chatops("approve", &["github:alice", "github:bob"])
        .chatops("emergency", &["github:erin"])
        .set("chatops.two_person", true)
        .review("approvals", 1)
        .review("merge", merge)
        .review("reviewers", ["alice"])
        .review("teams", ["acme/sre"])
}

fn world(merge: &str) -> (World, FakeGithub) {
    let w = World::with(&[policy(merge)]);
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_forge(&gh.url, "gh-token")
            .set("directory.github_teams", json!({ "acme/sre": ["carol"] })),
    );
    (w, gh)
}

fn comment(id: u64, issue: u64, login: &str, body: &str) -> Comment {
    Comment {
        id,
        issue,
        is_pull_request: true,
        body: body.into(),
        previous_body: None,
        sender: login.into(),
        sender_is_bot: false,
        repository: "acme/config".into(),
        at: None,
    }
}

/// A person's `/rollback` from chat (Slack), carried out by the engine.
fn ask_in_chat(w: &World, who: &str, text: &str) -> String {
    chat_as(w, Principal::new(who).with_groups(&directory()), text).text
}

fn directory() -> Directory {
    Directory { github_teams: [("acme/sre".into(), vec!["carol".into()])].into(), ..Directory::default() }
}

#[test]
fn alert_opens_one_pr_and_repeats_comment() {
    let (w, gh) = world("merge");
    let bad = w.deploy("checkout", "prod", "1.5.0", 10);
    let alert = w.alert("checkout", "prod", "fp");
    let mut engine = w.engine();
    let mut report = engine.handle(&alert, &Options::default()).unwrap();
    // The outbox opens the pull request, off the writer; the CLI waits for its link.
    engine.await_pull_request(&mut report, std::time::Duration::from_secs(30));
    drop(engine);
    let rb = match &report.outcome {
        Outcome::Proposed { rollback } => rollback.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(rb.pr_url.as_deref(), Some("https://github.example/acme/config/pull/1"));
    let prs = gh.prs();
    assert_eq!(prs.len(), 1);
    let pr = &prs[0];
    assert_eq!(pr.head, format!("rollback/checkout/prod/{}", rb.id));
    assert_eq!(pr.base, "main");
    assert!(pr.title.starts_with(&format!("Roll back checkout/prod to {}", &w.good.0[..10])), "{}", pr.title);
    for needle in [
        "alertmanager:fp@",
        "5xx above 5%",
        &bad.0[..10],
        "Deploy checkout 1.5.0 to prod",
        &w.good.0,
        "apps/checkout/prod/deployment.yaml",
        "registry.example.com/checkout:1.5.0 → registry.example.com/checkout:1.4.2",
        "policy** `prod`",
        "cooldown",
        "/rollback approve",
    ] {
        assert!(pr.body.contains(needle), "{needle} missing from the PR body:\n{}", pr.body);
    }
    assert_eq!(pr.labels, ["rollback", "service:checkout", "env:prod"]);
    assert_eq!((pr.reviewers.clone(), pr.teams.clone()), (vec!["alice".to_string()], vec!["sre".to_string()]));

    // The same incident again: a comment on the PR, no second PR.
    let again = w.engine().handle(&alert, &Options::default()).unwrap();
    assert!(matches!(again.outcome, Outcome::Duplicate { .. }), "{:?}", again.outcome);
    assert_eq!(gh.prs().len(), 1);
    assert!(gh.comments().iter().any(|(n, b)| *n == 1 && b.contains("Fired again")), "{:?}", gh.comments());
    gh.finish();
}

#[test]
fn approve_from_pr_comments_refuses_then_merges_and_tags() {
    let (w, gh) = world("merge");
    w.deploy("checkout", "prod", "1.5.0", 10);
    // carol (in acme/sre) asks in chat; the proposal is a pull request.
    let reply = ask_in_chat(&w, "github:carol", "/rollback checkout prod because 5xx since 1.5.0");
    assert!(reply.contains("proposed"), "{reply}");
    let pr = gh.prs()[0].clone();
    // A command on an issue (not one of our pull requests) is not answered at all.
    let mut elsewhere = comment(1, 99, "carol", "/rollback approve");
    elsewhere.is_pull_request = false;
    let reply = github_comment(&mut w.engine(), &elsewhere, &directory());
    assert!(reply.contains("not a rollback pull request"), "{reply}");
    assert!(!gh.reactions().iter().any(|(id, _)| *id == 1), "{:?}", gh.reactions());

    // An outsider, then the requester herself (two-person rule), then an approver.
    let reply = github_comment(&mut w.engine(), &comment(2, pr.number, "mallory", "/rollback approve"), &directory());
    assert!(reply.contains("not in chatops.approve"), "{reply}");
    assert!(gh.reactions().contains(&(2, "confused".into())));
    let reply = github_comment(&mut w.engine(), &comment(3, pr.number, "carol", "/rollback approve"), &directory());
    assert!(reply.contains("chatops.approve") || reply.contains("two-person"), "{reply}");
    // Code blocks and quotes are never commands.
    let reply = github_comment(
        &mut w.engine(),
        &comment(4, pr.number, "alice", "> /rollback approve\n\n```\n/rollback approve\n```"),
        &directory(),
    );
    assert_eq!(reply, "no /rollback command in the comment");
    let before = w.head();
    let reply =
        github_comment(&mut w.engine(), &comment(5, pr.number, "alice", "LGTM\n/rollback approve"), &directory());
    assert!(reply.contains("merged"), "{reply}");

    // Merged on "GitHub" (a real merge commit in the origin), tagged, commented.
    assert_eq!(w.git(&["rev-parse", "main^1"]), before);
    let merged = w.head();
    assert_eq!(gh.prs()[0].merged_sha.as_deref(), Some(merged.as_str()));
    let id = pr.head.rsplit('/').next().unwrap().to_string();
    assert_eq!(w.git(&["rev-parse", &format!("rollback/checkout/prod/{id}^{{commit}}")]), merged);
    assert!(w.show("main", &path("checkout", "prod")).contains("1.4.2"));
    assert!(
        gh.comments().iter().any(|(n, b)| *n == pr.number && b.contains("Merged by github:alice")),
        "{:?}",
        gh.comments()
    );
    // The audit trail finds the rollback through the merge commit.
    let out = w.run_cli(&["history", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rollbacks"][0]["id"], id.as_str());
    assert_eq!(v["rollbacks"][0]["delivery"], "direct");
    assert_eq!(v["rollbacks"][0]["actor"], "github:carol");
    gh.finish();
}

#[test]
fn squash_merge_keeps_the_trailers_and_replays_onto_a_moved_base() {
    let (w, gh) = world("squash");
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::Proposed { .. }));
    let other = w.deploy("cart", "prod", "2.1.0", 1);
    let pr = gh.prs()[0].clone();
    let reply = github_comment(&mut w.engine(), &comment(7, pr.number, "bob", "/rollback approve"), &directory());
    assert!(reply.contains("merged"), "{reply}");
    assert_eq!(w.git(&["rev-parse", "main^"]), other.0, "one squashed commit on top of the moved base");
    let id = pr.head.rsplit('/').next().unwrap();
    assert_eq!(w.trailers("main", "Rollback-Id"), [id]);
    assert!(w.show("main", &path("cart", "prod")).contains("2.1.0"));
    gh.finish();
}

#[test]
fn cancel_closes_the_pr_and_deletes_the_branch() {
    let (w, gh) = world("merge");
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let pr = gh.prs()[0].clone();
    let reply = github_comment(&mut w.engine(), &comment(8, pr.number, "bob", "/rollback cancel"), &directory());
    assert!(reply.contains("cancelled"), "{reply}");
    assert_eq!(gh.prs()[0].state, "closed");
    assert!(w.git(&["for-each-ref", "refs/heads/rollback/"]).is_empty());
    assert!(w.git(&["tag", "-l", "cancelled/*"]).starts_with("cancelled/checkout/prod/"));
    gh.finish();
}

#[test]
fn a_pr_merged_by_hand_is_recorded() {
    let (w, gh) = world("merge");
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let pr = gh.prs()[0].clone();
    // Someone merges in the GitHub UI (here: straight into the origin) and GitHub tells us.
    let head = w.git(&["rev-parse", &format!("refs/heads/{}", pr.head)]);
    w.git(&["update-ref", "refs/heads/main", &head]);
    let msg = w.engine().record_pr_closed(&pr.head, Some(&head), &head, "dave").unwrap();
    assert!(msg.starts_with("recorded rollback/checkout/prod/"), "{msg}");
    let again = w.engine().record_pr_closed(&pr.head, Some(&head), &head, "dave").unwrap();
    assert!(again.contains("already"), "{again}");
    assert_eq!(w.git(&["tag", "-l", "rollback/*"]).lines().count(), 1);
    let records = w.engine().history().unwrap().records().to_vec();
    assert_eq!(records[0].review.merged_by.as_deref(), Some("github:dave"));
    gh.finish();
}

#[test]
fn an_emergency_rollback_opens_a_follow_up_issue() {
    let (w, gh) = world("merge");
    w.deploy("checkout", "prod", "1.5.0", 10);
    // An alert proposes; erin breaks glass from the proposal's pull request.
    w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let pr = gh.prs()[0].clone();
    let ask = comment(20, pr.number, "erin", "/rollback checkout prod because payments are down --emergency");
    let reply = github_comment(&mut w.engine(), &ask, &directory());
    assert!(reply.contains("rolled back"), "direct despite mode pull_request: {reply}");
    assert!(reply.contains("an issue for its review is being opened"), "{reply}");
    assert_eq!(w.trailers("main", "Rollback-Emergency"), ["true"]);
    let issues = gh.issues();
    assert_eq!(issues.len(), 1);
    let (title, body, labels) = &issues[0];
    assert!(title.starts_with("Review emergency rollback rb-") && title.ends_with("checkout/prod"), "{title}");
    assert!(
        body.contains("github:erin") && body.contains("payments are down") && body.contains("Deploy checkout 1.5.0"),
        "{body}"
    );
    assert_eq!(labels, &["rollback", "emergency"]);
    gh.finish();
}

#[test]
fn auto_merge_waits_for_required_checks() {
    let (w, gh) = world("rebase");
    w.set_policies(&[policy("rebase").review("auto_merge", true).review("required_checks", ["ci/validate"])]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let rb = match &report.outcome {
        Outcome::Proposed { rollback } => rollback.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        report.decision.notes.iter().any(|n| n.contains("waits for checks: ci/validate")),
        "{:?}",
        report.decision.notes
    );
    let msg = w.engine().checks_completed(&rb.branch).unwrap();
    assert!(msg.contains("waits for checks"), "{msg}");
    gh.set_check(&rb.commit.0, "ci/validate", "success");
    let msg = w.engine().checks_completed(&rb.branch).unwrap();
    assert!(msg.starts_with("merged"), "{msg}");
    assert_eq!(w.trailers("main", "Rollback-Id"), [rb.id.as_str()]);
    assert!(w.show("main", &path("checkout", "prod")).contains("1.4.2"));
    gh.finish();
}

#[test]
fn as_a_github_app_with_installation_tokens_for_the_api_and_for_git() {
    let w = World::with(&[policy("merge")]);
    let gh = FakeGithub::start(w.origin.clone());
    w.write_config(&ConfigSpec::new().github_app(&gh.url));
    w.deploy("checkout", "prod", "1.5.0", 10);
    let mut engine = w.engine();
    assert_eq!(gh.app_calls().0, 1, "the installation was looked up with the App's JWT");
    let mut report = engine.handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    engine.await_pull_request(&mut report, std::time::Duration::from_secs(30));
    assert!(
        matches!(report.outcome, Outcome::Proposed { ref rollback } if rollback.pr_url.is_some()),
        "{:?} {:?}",
        report.outcome,
        report.decision.notes
    );
    assert_eq!(gh.prs().len(), 1, "API calls were accepted with the installation token");
    // git over https gets the same installation token, minted once and reused.
    let forge = engine.forge().github().unwrap();
    let token = forge.git_token().unwrap().unwrap();
    assert_eq!(token.expose(), crate::common::fake_github::INSTALLATION_TOKEN);
    let minted = gh.app_calls().1;
    forge.git_token().unwrap();
    assert_eq!(gh.app_calls().1, minted, "cached until it nears expiry");
    assert_eq!(format!("{token:?}"), "***");
    gh.finish();
}

/// A proposal for checkout/prod on the fake GitHub, and alice's approval of it.
fn approve_as_alice(w: &World, gh: &FakeGithub) -> String {
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let pr = gh.prs()[0].clone();
    github_comment(&mut w.engine(), &comment(5, pr.number, "alice", "/rollback approve"), &directory())
}

#[test]
fn a_merge_waits_for_github_to_work_out_mergeability_and_retries_base_modified() {
    let (w, gh) = world("merge");
    // GitHub answers "Base branch was modified" twice more, as right after a push.
    gh.gh.lock().unwrap().base_modified = 2;
    let reply = approve_as_alice(&w, &gh);
    assert!(reply.contains("merged"), "{reply}");
    let gh_state = gh.gh.lock().unwrap();
    // One refused because mergeability was unknown is avoided by waiting; the two injected are retried.
    assert_eq!(gh_state.merge_attempts, 3, "{:?}", gh_state.requests);
    drop(gh_state);
    assert_eq!(w.git(&["tag", "-l", "rollback/*"]).lines().count(), 1);
    assert_eq!(gh.prs()[0].state, "closed");
    gh.finish();
}

#[test]
fn a_merge_github_refuses_for_good_says_what_to_change() {
    for (setup, says) in [
        (("squash", None), "allow it in the repository's settings"),
        (("", Some("At least 1 approving review is required by reviewers with write access.")), "branch protection"),
    ] {
        let (w, gh) = world("merge");
        {
            let mut g = gh.gh.lock().unwrap();
            if !setup.0.is_empty() {
                g.merge_methods = vec![setup.0.into()];
            }
            g.protection = setup.1.map(str::to_string);
        }
        let reply = approve_as_alice(&w, &gh);
        assert!(reply.contains(says) && !reply.contains("merged:"), "{reply}");
        assert_eq!(gh.prs()[0].state, "open", "nothing merged");
        assert!(w.git(&["tag", "-l", "rollback/*"]).is_empty());
        assert_eq!(gh.gh.lock().unwrap().merge_attempts, 1, "a refusal for good is not retried");
        assert!(gh.comments().iter().any(|(_, b)| b.contains("Not merged")), "{:?}", gh.comments());
        gh.finish();
    }
}

#[test]
fn rate_limits_are_waited_out_or_retried_later_without_a_second_pull_request() {
    use crate::common::fake_github::Injected;
    let (w, gh) = world("merge");
    w.deploy("checkout", "prod", "1.5.0", 10);
    let limited = |secs: u64| Injected {
        request: "POST /repos/acme/config/pulls".into(),
        status: 429,
        headers: vec![("retry-after", secs.to_string())],
        message: "API rate limit exceeded".into(),
    };
    // A short limit is waited out within the call.
    gh.gh.lock().unwrap().inject.push(limited(1));
    let r = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    assert!(matches!(r.outcome, Outcome::Proposed { .. }), "{:?}", r.outcome);
    assert_eq!(gh.prs().len(), 1);

    // A long one fails the event as transient (the sender retries), and the retry opens no
    // second pull request for the same proposal.
    let (w, gh) = world("merge");
    w.deploy("checkout", "prod", "1.5.0", 10);
    gh.gh.lock().unwrap().inject.push(Injected {
        request: "POST /repos/acme/config/pulls".into(),
        status: 403,
        headers: vec![("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", "9999999999".into())],
        message: "API rate limit exceeded for installation".into(),
    });
    let mut engine = w.engine();
    let mut r = engine.handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    engine.await_pull_request(&mut r, std::time::Duration::from_secs(30));
    assert!(
        matches!(r.outcome, Outcome::Proposed { ref rollback } if rollback.pr_url.is_none()),
        "the proposal is the branch: {:?}",
        r.outcome
    );
    assert!(r.decision.notes.iter().any(|n| n.contains("rate limited")), "{:?}", r.decision.notes);
    assert!(gh.prs().is_empty());
    // The outbox opens it when due (at most 15 minutes, whatever the reset says), once.
    engine.verify_due().unwrap();
    assert!(engine.settle_forge(std::time::Duration::from_secs(30)));
    assert!(gh.prs().is_empty(), "not due yet");
    w.clock.advance(jiff::SignedDuration::from_mins(16));
    engine.verify_due().unwrap();
    assert!(engine.settle_forge(std::time::Duration::from_secs(30)));
    let branch = format!("rollback/checkout/prod/{}", r.outcome.rollback_id().unwrap());
    let opened = engine.pull_request(&branch, std::time::Duration::ZERO);
    assert!(matches!(opened, Some(Ok(Some(ref url))) if url.ends_with("/pull/1")), "{opened:?}");
    assert_eq!(gh.prs().len(), 1);
    engine.verify_due().unwrap();
    engine.handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    assert_eq!(gh.prs().len(), 1, "looked before opening again");
    drop(engine);
    // A 502 on a read is tried again.
    gh.gh.lock().unwrap().inject.push(Injected {
        request: "GET /repos/acme/config/pulls".into(),
        status: 502,
        headers: vec![],
        message: "Server Error".into(),
    });
    let reply = github_comment(&mut w.engine(), &comment(6, 1, "alice", "/rollback approve"), &directory());
    assert!(reply.contains("merged"), "{reply}");
    gh.finish();
}

#[test]
fn a_reviewer_github_refuses_does_not_cost_the_proposal() {
    let (w, gh) = world("merge");
    gh.gh.lock().unwrap().collaborators = vec!["bob".into()];
    w.deploy("checkout", "prod", "1.5.0", 10);
    let r = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    assert!(matches!(r.outcome, Outcome::Proposed { .. }), "{:?}", r.outcome);
    let pr = gh.prs()[0].clone();
    assert!(pr.reviewers.is_empty() && !pr.labels.is_empty(), "{pr:?}");
    assert!(gh.comments().iter().any(|(_, b)| b.contains("Reviewers could not be requested")), "{:?}", gh.comments());
    gh.finish();
}

#[test]
fn the_installation_of_a_renamed_repository_is_found_through_the_redirect() {
    let w = World::with(&[policy("merge")]);
    let gh = FakeGithub::start(w.origin.clone());
    gh.gh.lock().unwrap().renamed_from = Some("old-config".into());
    let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github-app-test-key.pem");
    w.write_config(&ConfigSpec::new().set(
        "forge",
        json!({ "kind": "github", "api_url": gh.url, "owner": "acme", "repo": "old-config", "app_id": 12345, "private_key_file": key }),
    ));
    let engine = w.engine();
    assert_eq!(gh.app_calls().0, 1, "{:?}", gh.gh.lock().unwrap().requests);
    drop(engine);
    gh.finish();
}

#[test]
fn required_checks_are_found_on_every_page_in_the_status_api_and_skipped_counts_as_passed() {
    let (w, gh) = world("rebase");
    let required = ["build", "ci/legacy", "docs"];
    w.set_policies(&[policy("rebase").review("auto_merge", true).review("required_checks", required)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let report = w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let Outcome::Proposed { rollback: rb } = &report.outcome else { panic!("{:?}", report.outcome) };
    // 130 runs: `build` is on the second page; it failed once, then passed on a re-run.
    for i in 0..130 {
        gh.set_check(&rb.commit.0, &format!("lint-{i}"), "success");
        if i == 20 {
            gh.set_check(&rb.commit.0, "build", "failure");
        }
    }
    gh.set_check(&rb.commit.0, "docs", "failure");
    let msg = w.engine().checks_completed(&rb.branch).unwrap();
    assert!(msg.contains("build") && msg.contains("ci/legacy") && msg.contains("docs"), "{msg}");
    gh.set_check(&rb.commit.0, "build", "success");
    gh.set_check(&rb.commit.0, "docs", "skipped");
    let msg = w.engine().checks_completed(&rb.branch).unwrap();
    assert!(msg.contains("waits for checks: ci/legacy"), "{msg}");
    gh.gh.lock().unwrap().statuses.insert(rb.commit.0.clone(), vec![("ci/legacy".into(), "success".into())]);
    let msg = w.engine().checks_completed(&rb.branch).unwrap();
    assert!(msg.starts_with("merged"), "{msg}");
    gh.finish();
}

#[test]
fn check_forge_names_every_missing_permission_event_and_merge_method() {
    let w = World::with(&[policy("merge").review("teams", ["acme/sre"]).review("required_checks", ["ci"])]);
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-secrets"), "s3cret\n").unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_app(&gh.url)
            .set("sources.github", json!({ "secrets_file": "gh-secrets", "workflows": ["deploy"] }))
            .set("directory.github_teams", json!({ "acme/sre": ["carol"] })),
    );
    let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let out = w.run_cli(&["check", "--forge"]);
    assert_eq!(out.status.code(), Some(0), "everything granted: {}", said(&out));
    assert!(!said(&out).contains("forge:"), "{}", said(&out));

    // An App installed as the old docs said: no Actions, no Deployments, Checks
    // read-only; no workflow_run events; and a repository that only squashes.
    {
        let mut g = gh.gh.lock().unwrap();
        g.app_permissions = Some(json!({ "metadata": "read", "contents": "write", "pull_requests": "write",
                                         "issues": "write", "checks": "read", "statuses": "read" }));
        g.app_events = Some(vec!["issue_comment".into(), "pull_request".into(), "deployment_status".into()]);
        g.merge_methods = vec!["squash".into()];
    }
    let out = w.run_cli(&["check", "--forge"]);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("review.merge is merge, which the repository does not allow (it allows: squash)"), "{text}");
    assert!(text.contains("needs actions permission Read-only (has none) to sources.github.workflows"), "{text}");
    assert!(text.contains("needs deployments permission Read-only (has none)"), "{text}");
    // Team reviewers are requested with Pull requests write alone: Members is never asked for.
    assert!(!text.contains("members"), "{text}");
    assert!(text.contains("does not subscribe to workflow_run events"), "{text}");
    // Read is enough for required_checks; the gate on pull requests writes check runs.
    assert!(text.contains("needs checks permission Read and write (has read) to hold: the rollbackd/gate"), "{text}");
    gh.finish();
}

#[test]
fn a_delivery_lost_while_the_origin_was_down_is_sent_again_and_handled_once() {
    let w = World::with(&[PolicySpec::new("deploy-failed")
        .source("github")
        .matchers(&["event=\"workflow_run\"", "workflow=\"deploy\""])
        .target("checkout", "prod", &["apps/checkout/prod/**"])
        .set("target.to", "{{ labels.sha }}~1")
        .mode(Mode::Direct)]);
    let bad = w.deploy("checkout", "prod", "1.5.0", 10);
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-secrets"), "hook-secret\n").unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_app(&gh.url)
            .set(
                "sources.github",
                json!({ "secrets_file": "gh-secrets", "workflows": ["deploy"], "redeliver_every": "1s" }),
            )
            .set("server.refresh_interval", "1s")
            .set("git.fetch_freshness", "0s"),
    );
    let s = crate::serve::serve_app(&w, &gh, "data");

    // The origin goes away; GitHub's delivery of the failed deploy is answered 503, and GitHub
    // will not send it again by itself.
    let away = w.root().join("origin-away.git");
    std::fs::rename(&w.origin, &away).unwrap();
    let ready = || crate::serve::get(&format!("{}/readyz", s.url)).map(|(st, _)| st == 200).unwrap_or(false);
    wait_for("the origin to be seen gone", 30, || !ready());
    let mut run = crate::common::http::fixture("workflow_run.completed.payload.json");
    run["workflow_run"]["name"] = "deploy".into();
    run["workflow_run"]["conclusion"] = "failure".into();
    run["workflow_run"]["head_branch"] = "main".into();
    run["workflow_run"]["head_sha"] = bad.0.clone().into();
    let body = serde_json::to_vec(&run).unwrap();
    assert_eq!(gh.deliver("workflow_run", "guid-lost-1", &body), 503);

    // The origin is back: rollbackd asks GitHub for its failed deliveries, GitHub sends this one
    // again, and the rollback happens, once.
    assert_eq!(git_in(&away, &["log", "--format=%(trailers:key=Rollback-Id,valueonly)", "main"]).trim(), "");
    std::fs::rename(&away, &w.origin).unwrap();
    wait_for("the redelivered rollback", 60, || crate::serve::rollback_commits(&w) == 1);
    let attempts = || gh.gh.lock().unwrap().deliveries.iter().filter(|d| d.guid == "guid-lost-1").count();
    wait_for("the redelivery answered", 30, || {
        gh.gh.lock().unwrap().deliveries.iter().any(|d| d.guid == "guid-lost-1" && d.status_code == 200)
    });
    // Two more rounds of looking: a handled delivery is not asked for again.
    let looked = || gh.gh.lock().unwrap().requests.iter().filter(|r| r.starts_with("GET /app/hook/deliveries")).count();
    let now = looked();
    wait_for("two more rounds", 30, || looked() >= now + 2);
    assert_eq!(
        attempts(),
        2,
        "{:?}",
        gh.gh.lock().unwrap().deliveries.iter().map(|d| (&d.guid, d.status_code)).collect::<Vec<_>>()
    );
    assert_eq!(crate::serve::rollback_commits(&w), 1);
    assert_eq!(w.trailers("main", "Rollback-Trigger").len(), 1);
    drop(s);
    gh.finish();
}

#[test]
fn github_telling_rollbackd_about_its_own_comments_and_merge_does_not_loop() {
    const BOT_LOGIN: &str = "rollbackd-app[bot]";
    let w = World::with(&[policy("merge")]);
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
    std::fs::write(w.root().join("gh-secrets"), "hook-secret\n").unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_forge(&gh.url, "gh-token")
            .set("directory.github_teams", json!({ "acme/sre": ["carol"] }))
            .set("sources.github", json!({ "secrets_file": "gh-secrets", "workflows": ["deploy"] })),
    );
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let pr = gh.prs()[0].clone();
    let s = crate::serve::serve_app(&w, &gh, "srv");

    // alice approves in a comment; rollbackd merges and says so; GitHub sends rollbackd its own
    // merge and its own comments back.
    let c = gh.pr_comment(pr.number, 7001, "alice", "/rollback approve");
    assert_eq!(gh.deliver("issue_comment", "approve-1", &c), 200);
    wait_for("the merge", 30, || gh.prs()[0].state == "closed");
    let own = |event: &str| {
        let gh = gh.gh.lock().unwrap();
        let own = gh.deliveries.iter().filter(|d| d.guid.starts_with(&format!("own-{event}")));
        own.map(|d| (d.status_code, d.answer.clone())).collect::<Vec<_>>()
    };
    wait_for("its own events answered", 30, || {
        let (comments, merges) = (own("issue_comment"), own("pull_request"));
        !comments.is_empty() && comments.iter().all(|(s, _)| *s != 0) && merges.len() == 1
    });
    // Its own comments are ignored (never answered: no loop); its own merge is recorded already.
    for (status, answer) in own("issue_comment") {
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("\"ignored\""), "{answer}");
    }
    let (status, answer) = own("pull_request").remove(0);
    assert!(status == 200 && answer.contains("already"), "{status} {answer}");
    assert!(gh.comments().iter().all(|(_, b)| !b.contains(BOT_LOGIN)), "{:?}", gh.comments());
    assert_eq!(w.git(&["tag", "-l", "rollback/*"]).lines().count(), 1, "the merge recorded once");
    drop(s);
    gh.finish();
}

#[test]
fn a_push_to_the_config_repo_brings_the_mirror_up_to_date_at_once() {
    let (w, gh) = world("merge");
    std::fs::write(w.root().join("gh-secrets"), "hook-secret\n").unwrap();
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        format!(
            "{cfg}sources:\n  github: {{ secrets_file: gh-secrets, workflows: [deploy] }}\n\
             server: {{ refresh_interval: 1h }}\ngit: {{ fetch_freshness: 1h }}\n"
        ),
    )
    .unwrap();
    let s = crate::serve::serve_app(&w, &gh, "srv");
    let mirror = w.root().join("srv/mirror.git");
    let mirror_head = || git_in(&mirror, &["rev-parse", "refs/heads/main"]);
    let pushed = w.deploy("checkout", "prod", "1.5.0", 0);
    assert_ne!(mirror_head(), pushed.0, "nothing fetched yet (an hour between refreshes)");

    let mut push = crate::common::openapi::webhook_payload("push", crate::common::http::fixture("push.payload.json"));
    push["repository"]["full_name"] = "acme/config".into();
    push["ref"] = "refs/heads/other".into();
    assert_eq!(gh.deliver("push", "push-1", &serde_json::to_vec(&push).unwrap()), 200);
    assert_ne!(mirror_head(), pushed.0, "another branch: nothing fetched");
    push["ref"] = "refs/heads/main".into();
    assert_eq!(gh.deliver("push", "push-2", &serde_json::to_vec(&push).unwrap()), 200);
    assert_eq!(mirror_head(), pushed.0, "answered once fetched");
    drop(s);
    gh.finish();
}

/// Whoever can push names files, and whoever can alert writes the summary: in the pull request
/// the title and every file path are inert Markdown like the rest of the body. A backtick in a
/// file name cannot end a code span, a `|` cannot add a table cell, HTML stays text, and nobody
/// is mentioned.
#[test]
fn a_pull_requests_title_and_file_paths_are_inert_markdown() {
    let (w, gh) = world("merge");
    let nasty = "apps/checkout/prod/a`b <img src=x> @alice |x|.yaml";
    let manifest = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    w.commit_files(
        "Deploy checkout 1.5.0 to prod",
        &[(path("checkout", "prod").as_str(), Some(manifest.as_str())), (nasty, Some("x: 1\n"))],
        10,
    );
    let mut alert = w.alert("checkout", "prod", "fp");
    alert
        .annotations
        .insert("summary".into(), "@everyone <img src=x onerror=alert(1)> `x` [y](https://evil.example)".into());
    let report = w.engine().handle(&alert, &Options::default()).unwrap();
    assert_eq!(report.outcome.name(), "proposed", "{:?}", report.outcome);
    let prs = gh.prs();
    let pr = &prs[0];
    for (what, text) in [("title", &pr.title), ("body", &pr.body)] {
        for raw in ["@everyone", "@alice", "`x`", "](", "https://"] {
            assert!(!text.contains(raw), "{raw} in the {what}:\n{text}");
        }
        // HTML only as escaped text.
        assert!(text.match_indices('<').all(|(i, _)| text[..i].ends_with('\\')), "HTML in the {what}:\n{text}");
    }
    assert!(pr.title.starts_with("Roll back checkout/prod to "), "{}", pr.title);
    assert!(pr.body.starts_with("## Rollback rb-"), "{}", pr.body);
    // The path is one escaped table cell: `\`` and `\|` are text, not syntax.
    let escaped = "apps/checkout/prod/a\\`b \\<img src\\=x\\> @\u{2060}alice \\|x\\|.yaml";
    let row = pr.body.lines().find(|l| l.contains("a\\`b")).unwrap_or_else(|| panic!("no row:\n{}", pr.body));
    assert_eq!(row, format!("| {escaped} | 0 | 1 |"), "{}", pr.body);
    gh.finish();
}

/// The writer never waits on GitHub: while GitHub sits on a proposal's pull request, the next
/// incident's proposal is pushed all the same; the pull requests open when GitHub answers, in
/// order, and the proposal's notice goes out then, with its pull request's link.
#[test]
fn a_slow_github_does_not_hold_the_writer() {
    let w = World::with(&[policy("merge").set("notify", ["log"])]);
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
    std::fs::write(w.root().join("am-tokens"), format!("{}\n", crate::serve::TOKEN)).unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_forge(&gh.url, "gh-token")
            .set("directory.github_teams", json!({ "acme/sre": ["carol"] }))
            .set("sources.alertmanager", json!({ "bearer_tokens_file": "am-tokens" }))
            .set("notify.channels.log", json!({ "kind": "file", "path": "notices.jsonl" })),
    );
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("cart", "prod", "2.1.0", 9);
    let release = gh.hold("POST /repos/acme/config/pulls");
    let s = crate::serve::serve(&w, "srv");

    let (status, answer) = crate::serve::post_alert(&s.url, &crate::serve::alert_for("checkout", "fp1")).unwrap();
    assert_eq!(status, 200, "{answer}");
    let branches = || w.git(&["for-each-ref", "--format=%(refname:short)", "refs/heads/rollback/"]);
    wait_for("the first proposal's branch", 30, || branches().contains("rollback/checkout/prod/"));
    wait_for("GitHub asked for the first pull request", 30, || {
        gh.gh.lock().unwrap().requests.iter().any(|r| r == "POST /repos/acme/config/pulls")
    });
    // GitHub has not answered; the writer goes on with the next incident.
    let (status, _) = crate::serve::post_alert(&s.url, &crate::serve::alert_for("cart", "fp2")).unwrap();
    assert_eq!(status, 200);
    wait_for("the second proposal's branch", 30, || branches().contains("rollback/cart/prod/"));
    assert!(gh.prs().is_empty(), "GitHub has answered nothing yet");
    let notices = || std::fs::read_to_string(w.root().join("notices.jsonl")).unwrap_or_default();
    assert!(!notices().contains("\"proposed\""), "a proposal's notice waits for its pull request: {}", notices());

    release.send(true).unwrap();
    wait_for("both pull requests", 30, || gh.prs().len() == 2);
    let prs = gh.prs();
    assert!(prs[0].head.starts_with("rollback/checkout/prod/") && prs[1].head.starts_with("rollback/cart/prod/"));
    wait_for("both notices", 30, || notices().lines().count() == 2);
    for (line, pr) in notices().lines().zip(&prs) {
        let n: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(n["event"], "proposed", "{n}");
        let url = format!("https://github.example/acme/config/pull/{}", pr.number);
        assert_eq!(n["pr"], url.as_str(), "{n}");
    }
    drop(s);
    gh.finish();
}

/// Asking GitHub for the App's failed deliveries is GitHub's network, not the writer's: while
/// GitHub sits on the listing, an alert is still rolled back at once.
#[test]
fn a_slow_delivery_listing_does_not_hold_the_writer() {
    let w = World::with(&[PolicySpec::new("prod").prod_only().mode(Mode::Direct)]);
    w.deploy("checkout", "prod", "1.5.0", 10);
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-secrets"), "hook-secret\n").unwrap();
    std::fs::write(w.root().join("am-tokens"), format!("{}\n", crate::serve::TOKEN)).unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_app(&gh.url)
            .set("sources.github", json!({ "secrets_file": "gh-secrets", "redeliver_every": "1s" }))
            .set("sources.alertmanager", json!({ "bearer_tokens_file": "am-tokens" }))
            .set("server.refresh_interval", "1s"),
    );
    let release = gh.hold("GET /app/hook/deliveries");
    let s = crate::serve::serve_app(&w, &gh, "srv");
    wait_for("the server to ask for its deliveries", 30, || {
        gh.gh.lock().unwrap().requests.iter().any(|r| r.starts_with("GET /app/hook/deliveries"))
    });

    // GitHub has not answered the listing; the alert is rolled back all the same.
    let (status, answer) = crate::serve::post_alert(&s.url, &crate::serve::alert_for("checkout", "fp1")).unwrap();
    assert_eq!(status, 200, "{answer}");
    wait_for("the rollback on the origin", 10, || crate::serve::rollback_commits(&w) == 1);
    let listings =
        || gh.gh.lock().unwrap().requests.iter().filter(|r| r.starts_with("GET /app/hook/deliveries")).count();
    assert_eq!(listings(), 1, "one round at a time: the held one");

    release.send(true).unwrap();
    wait_for("the next round of looking", 30, || listings() >= 2);
    drop(s);
    gh.finish();
}

/// A command in a pull request's comment asks GitHub nothing on the writer: which proposal the
/// pull request is, is asked by the edge before the comment is queued, and the reactions and
/// the reply go through the outbox. While GitHub sits on reactions and comments, the command
/// is still answered and an alert still rolled back.
#[test]
fn a_command_in_a_comment_while_github_is_slow_to_take_replies_does_not_hold_the_writer() {
    let w = World::with(&[policy("merge")]);
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
    std::fs::write(w.root().join("gh-secrets"), "hook-secret\n").unwrap();
    std::fs::write(w.root().join("am-tokens"), format!("{}\n", crate::serve::TOKEN)).unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_forge(&gh.url, "gh-token")
            .set("sources.github", json!({ "secrets_file": "gh-secrets", "workflows": ["deploy"] }))
            .set("sources.alertmanager", json!({ "bearer_tokens_file": "am-tokens" })),
    );
    w.deploy("checkout", "prod", "1.5.0", 10);
    w.deploy("cart", "prod", "2.0.0", 60);
    w.deploy("cart", "prod", "3.0.0", 9);
    w.engine().handle(&w.alert("checkout", "prod", "fp"), &Options::default()).unwrap();
    let pr = gh.prs()[0].clone();
    let s = crate::serve::serve_app(&w, &gh, "srv");
    let release = gh.hold("POST /repos/acme/config/issues");

    assert_eq!(gh.deliver("issue_comment", "help-1", &gh.pr_comment(pr.number, 7002, "alice", "/rollback help")), 200);
    wait_for("GitHub asked for the first reaction", 30, || {
        gh.gh.lock().unwrap().requests.iter().any(|r| r.starts_with("POST /repos/acme/config/issues/comments/"))
    });
    // The reaction is held; an alert is handled meanwhile (proposed: prod is reviewed).
    let (status, answer) = crate::serve::post_alert(&s.url, &crate::serve::alert_for("cart", "fp2")).unwrap();
    assert_eq!(status, 200, "{answer}");
    let branches = || w.git(&["for-each-ref", "--format=%(refname:short)", "refs/heads/rollback/"]);
    wait_for("the cart proposal on the origin", 10, || branches().contains("rollback/cart/prod/"));
    assert!(gh.comments().is_empty(), "nothing said yet: {:?}", gh.comments());

    release.send(true).unwrap();
    wait_for("the reply", 30, || gh.comments().iter().any(|(n, b)| *n == pr.number && b.contains("/rollback")));
    let reactions: Vec<String> = gh.gh.lock().unwrap().reactions.iter().map(|(_, r)| r.clone()).collect();
    wait_for("both reactions", 30, || gh.gh.lock().unwrap().reactions.len() == 2);
    let reactions = if reactions.len() == 2 {
        reactions
    } else {
        gh.gh.lock().unwrap().reactions.iter().map(|(_, r)| r.clone()).collect()
    };
    assert_eq!(reactions, ["eyes", "rocket"], "in order");
    drop(s);
    gh.finish();
}
