//! `codeowners` in `chatops.allow` / `chatops.approve` / `review.reviewers`: the people and
//! teams the config repo's CODEOWNERS (on the watched branch) names for every file a rollback
//! changes. Outcomes read back from the origin with the git CLI, and from the fake GitHub.

use crate::common::fake_github::{FakeGithub, TOKEN};
use crate::common::*;
use rollbackd::parsers::Comment;
use rollbackd::{Directory, Principal};

fn people() -> serde_json::Value {
    json!({
        "alice": ["slack:UALICE", "github:alice"],
        "bob": ["slack:UBOB", "github:bob"],
        "mallory": ["slack:UMAL", "github:mallory"],
    })
}

/// checkout/prod with a canary, proposed for review; `codeowners` on the branch before the
/// canary came.
fn owners_world(codeowners: &str, policy: PolicySpec) -> World {
    let w = World::with(&[policy]);
    w.write_config(&ConfigSpec::new().set("directory.people", people()));
    w.commit_files("Code owners", &[(".github/CODEOWNERS", Some(codeowners))], 145);
    w.deploy_checkout_with_canary();
    w
}

fn proposal_id(reply: &str) -> String {
    let tail = reply.split("approve with `/rollback approve ").nth(1).unwrap_or_else(|| panic!("{reply}"));
    tail.lines().next().unwrap().trim_end_matches('`').to_string()
}

fn ask(w: &World, who: &str, text: &str) -> String {
    chat_as(w, Principal::new(who), text).text
}

fn canary_restored(w: &World) -> bool {
    w.show("main", CANARY) == manifest("checkout", "prod", &image("checkout", "1.4.2")).trim_end()
}

#[test]
fn a_code_owner_approves_from_slack_and_an_owner_of_all_but_one_file_is_refused_naming_it() {
    let w = owners_world(
        "/apps/checkout/prod/ @alice @bob\n/apps/checkout/prod/canary/ @alice\n",
        PolicySpec::new("test-policy")
            .mode(Mode::PullRequest)
            .chatops("allow", &["slack:UREQ"])
            .chatops("approve", &["codeowners"]),
    );
    let id = proposal_id(&ask(&w, "slack:UREQ", "/rollback checkout prod"));

    // bob owns deployment.yaml, not the canary the rollback changes too.
    let said = ask(&w, "slack:UBOB", &format!("/rollback approve {id}"));
    assert!(said.contains("not a code owner") && said.contains(CANARY), "{said}");
    assert!(w.git(&["tag", "-l", "rollback/*"]).is_empty(), "nothing merged");

    // alice owns both (her Slack account is her GitHub login through directory.people).
    let said = ask(&w, "slack:UALICE", &format!("/rollback approve {id}"));
    assert!(said.contains("merged"), "{said}");
    assert!(canary_restored(&w));
    assert_eq!(w.git(&["tag", "-l", "rollback/*"]).lines().count(), 1);
}

#[test]
fn a_codeowners_change_inside_the_proposal_grants_nothing() {
    // The bad change also handed CODEOWNERS to alice; rolling it back would give it back to
    // mallory. Until that is merged, the branch says alice.
    let policy = PolicySpec::new("test-policy")
        .mode(Mode::PullRequest)
        .chatops("allow", &["slack:UREQ"])
        .chatops("approve", &["codeowners"])
        .set("target.paths", ["apps/{{ labels.service }}/{{ labels.env }}/**", ".github/**"]);
    let w = World::with(&[policy]);
    w.write_config(&ConfigSpec::new().set("directory.people", people()));
    w.commit_files("Code owners", &[(".github/CODEOWNERS", Some("* @mallory\n"))], 145);
    let bad = manifest("checkout", "prod", &image("checkout", "1.5.0"));
    w.commit_files(
        "Deploy checkout 1.5.0, hand the repo to alice",
        &[(&path("checkout", "prod"), Some(&bad)), (".github/CODEOWNERS", Some("* @alice\n"))],
        10,
    );
    let id = proposal_id(&ask(&w, "slack:UREQ", "/rollback checkout prod"));
    let branch = w.git(&["for-each-ref", "--format=%(refname:short)", "refs/heads/rollback"]);
    assert_eq!(w.show(&branch, ".github/CODEOWNERS"), "* @mallory", "the proposal restores mallory");

    let said = ask(&w, "slack:UMAL", &format!("/rollback approve {id}"));
    assert!(said.contains("not a code owner") && said.contains("@alice"), "{said}");
    assert_eq!(w.show("main", ".github/CODEOWNERS"), "* @alice", "nothing merged");

    let said = ask(&w, "slack:UALICE", &format!("/rollback approve {id}"));
    assert!(said.contains("merged"), "{said}");
    assert_eq!(w.show("main", ".github/CODEOWNERS"), "* @mallory");
}

#[test]
fn codeowners_in_chatops_allow_admits_a_request_only_from_an_owner_of_every_file() {
    let w = owners_world(
        "/apps/checkout/prod/ @alice @bob\n/apps/checkout/prod/canary/ @alice\n",
        PolicySpec::new("test-policy").chatops("allow", &["codeowners"]),
    );
    let said = ask(&w, "slack:UBOB", "/rollback checkout prod");
    assert!(said.contains("may not request rollbacks") && said.contains(CANARY), "{said}");
    assert!(!canary_restored(&w));
    let said = ask(&w, "slack:UMAL", "/rollback checkout prod");
    assert!(said.contains("not a code owner"), "{said}");
    let said = ask(&w, "slack:UALICE", "/rollback checkout prod");
    assert!(said.contains("rolled back"), "{said}");
    assert!(canary_restored(&w));
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

#[test]
fn on_github_an_owning_teams_member_approves_by_comment_and_owners_are_requested_as_reviewers() {
    let policy = carol_asks_owners_approve().review("reviewers", ["codeowners"]);
    let w = World::with(&[policy]);
    let gh = FakeGithub::start(w.origin.clone());
    std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
    w.write_config(
        &ConfigSpec::new()
            .github_forge(&gh.url, "gh-token")
            .set("directory.github_teams", json!({ "acme/checkout": ["dave"] })),
    );
    let directory =
        Directory { github_teams: [("acme/checkout".into(), vec!["dave".into()])].into(), ..Directory::default() };
    w.commit_files(
        "Code owners",
        &[(
            "CODEOWNERS",
            Some("* @ops-lead\n/apps/checkout/ @acme/checkout @erin\n/apps/checkout/prod/canary/ @acme/checkout\n"),
        )],
        145,
    );
    w.deploy_checkout_with_canary();

    let said = chat_as(&w, Principal::new("github:carol"), "/rollback checkout prod").text;
    assert!(said.contains("proposed"), "{said}");
    let pr = gh.prs()[0].clone();
    assert_eq!((pr.reviewers.clone(), pr.teams.clone()), (vec!["erin".to_string()], vec!["checkout".to_string()]));

    // erin owns deployment.yaml but not the canary.
    let reply =
        rollbackd::github_comment(&mut w.engine(), &comment(1, pr.number, "erin", "/rollback approve"), &directory);
    assert!(reply.contains("not a code owner") && reply.contains(CANARY), "{reply}");
    assert!(w.git(&["tag", "-l", "rollback/*"]).is_empty());
    // dave is in acme/checkout, which owns both.
    let reply =
        rollbackd::github_comment(&mut w.engine(), &comment(2, pr.number, "dave", "/rollback approve"), &directory);
    assert!(reply.contains("merged"), "{reply}");
    assert!(canary_restored(&w));
    gh.finish();
}

#[test]
fn check_warns_when_codeowners_is_missing_or_leaves_a_target_file_unowned() {
    let policy = PolicySpec::new("test-policy").mode(Mode::PullRequest).chatops("approve", &["codeowners"]);
    let w = World::with(&[policy]);
    let out = w.run_cli(&["check", "--online"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("uses codeowners, but main has no CODEOWNERS file"), "{text}");

    w.commit_files("Code owners", &[("docs/CODEOWNERS", Some("/apps/checkout/ @alice\n!apps/cart/ @bob\n"))], 1);
    let out = w.run_cli(&["check", "--online"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("file(s) with no owner in docs/CODEOWNERS (first: apps/cart/"), "{text}");
    assert!(text.contains("docs/CODEOWNERS line 2 is skipped") && text.contains("negation"), "{text}");

    w.commit_files("Code owners", &[("docs/CODEOWNERS", Some("/apps/ @alice\n"))], 0);
    let out = w.run_cli(&["check", "--online"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("CODEOWNERS") && !text.contains("codeowners"), "{text}");
}

#[test]
fn github_s_lookup_order_holds_dot_github_first_then_the_root_and_docs_last() {
    let w = World::with(&[PolicySpec::new("test-policy").chatops("allow", &["codeowners"])]);
    w.write_config(&ConfigSpec::new().set("directory.people", people()));
    w.commit_files(
        "Code owners, three times",
        &[
            (".github/CODEOWNERS", Some("* @alice\n")),
            ("CODEOWNERS", Some("* @mallory\n")),
            ("docs/CODEOWNERS", Some("* @bob\n")),
        ],
        145,
    );
    w.deploy_checkout_with_canary();

    // .github/CODEOWNERS wins over the root's and docs/'s.
    let said = ask(&w, "slack:UMAL", "/rollback checkout prod");
    assert!(said.contains("not a code owner") && said.contains("@alice (.github/CODEOWNERS)"), "{said}");
    let said = ask(&w, "slack:UBOB", "/rollback checkout prod");
    assert!(said.contains("not a code owner"), "{said}");
    assert!(!canary_restored(&w));

    // Without it, the root's wins over docs/'s.
    w.commit_files("Code owners move", &[(".github/CODEOWNERS", None)], 5);
    let said = ask(&w, "slack:UBOB", "/rollback checkout prod");
    assert!(said.contains("not a code owner") && said.contains("@mallory (CODEOWNERS)"), "{said}");
    assert!(!canary_restored(&w));
    let said = ask(&w, "slack:UMAL", "/rollback checkout prod");
    assert!(said.contains("rolled back"), "{said}");
    assert!(canary_restored(&w));
}

/// Prod rollbacks proposed as pull requests: carol may ask for them, code owners approve.
fn carol_asks_owners_approve() -> PolicySpec {
    PolicySpec::new("prod")
        .prod_only()
        .mode(Mode::PullRequest)
        .chatops("allow", &["github:carol"])
        .chatops("approve", &["codeowners"])
}

/// On the fake GitHub, dave active in @acme/checkout, CODEOWNERS as `codeowners` says,
/// rollbackd configured as `config` makes it, and carol's proposal to roll back checkout/prod
/// and its canary: what rollbackd answered her.
fn carols_proposal(
    codeowners: &str,
    config: impl FnOnce(&World, &FakeGithub) -> ConfigSpec,
) -> (World, FakeGithub, String) {
    let w = World::with(&[carol_asks_owners_approve()]);
    let gh = FakeGithub::start(w.origin.clone());
    gh.add_team_member("acme/checkout", "dave", "active");
    w.write_config(&config(&w, &gh));
    w.commit_files("Code owners", &[("CODEOWNERS", Some(codeowners))], 145);
    w.deploy_checkout_with_canary();
    let said = chat_as(&w, Principal::new("github:carol"), "/rollback checkout prod").text;
    (w, gh, said)
}

/// CODEOWNERS gives everything to @acme/checkout, a team known only to GitHub (dave is in it,
/// erin is invited, mallory is not); carol proposed rolling back checkout/prod and its canary.
/// rollbackd is an App on the fake GitHub, its deliveries signed `hook-secret`.
fn teams_world(extra: &[(&str, serde_json::Value)]) -> (World, FakeGithub) {
    let (w, gh, said) = carols_proposal("* @acme/sre\n/apps/checkout/ @acme/checkout\n", |w, gh| {
        gh.add_team_member("acme/checkout", "erin", "pending");
        gh.add_team_member("acme/sre", "mallory", "active");
        std::fs::write(w.root().join("gh-secrets"), "hook-secret\n").unwrap();
        let mut cfg = ConfigSpec::new().github_app(&gh.url).set("sources.github.secrets_file", "gh-secrets");
        for (k, v) in extra {
            cfg = cfg.set(k, v.clone());
        }
        cfg
    });
    assert!(said.contains("proposed"), "{said}");
    (w, gh)
}

/// The forge by token (no webhooks), dave active in @acme/checkout on GitHub, which owns
/// `apps/checkout/`, `directory.people` as `people` makes it, and carol's proposal open; its id.
fn token_forge_world(people: impl FnOnce(&World) -> serde_json::Value) -> (World, FakeGithub, String) {
    let (w, gh, said) = carols_proposal("/apps/checkout/ @acme/checkout\n", |w, gh| {
        std::fs::write(w.root().join("gh-token"), TOKEN).unwrap();
        ConfigSpec::new().github_forge(&gh.url, "gh-token").set("directory.people", people(w))
    });
    let id = proposal_id(&said);
    (w, gh, id)
}

/// `/rollback approve` commented on pull request `pr` by `login`, as GitHub delivers it;
/// returns the status rollbackd answered.
fn comment_on(gh: &FakeGithub, pr: u64, id: u64, login: &str) -> u16 {
    gh.deliver("issue_comment", &format!("approve-{id}"), &gh.pr_comment(pr, id, login, "/rollback approve"))
}

/// What rollbackd answered on the pull request to `login` (its comments neutralise `@`).
/// `login` approves by comment on pull request `pr`; rollbackd's answer to them, once it comes.
fn approve_by_comment(gh: &FakeGithub, pr: u64, id: u64, login: &str) -> String {
    comment_on(gh, pr, id, login);
    wait_for(&format!("the answer to {login}"), 30, || !answer_to(gh, login).is_empty());
    answer_to(gh, login)
}

fn answer_to(gh: &FakeGithub, login: &str) -> String {
    let wanted = format!("github:{login}");
    gh.comments().into_iter().map(|(_, body)| body).rfind(|b| b.contains(&wanted)).unwrap_or_default()
}

#[test]
fn a_member_of_an_owning_team_known_only_to_github_approves_by_comment_and_the_proposal_merges() {
    let (w, gh) = teams_world(&[]);
    let pr = gh.prs()[0].clone();
    let s = crate::serve::serve_app(&w, &gh, "srv");

    // dave is in no directory.github_teams: GitHub alone says he is in @acme/checkout.
    assert_eq!(comment_on(&gh, pr.number, 9001, "dave"), 200);
    wait_for("the merge", 30, || gh.prs()[0].state == "closed");
    assert!(canary_restored(&w), "the rollback landed on the origin's main");
    assert_eq!(w.trailers("main", "Rollback-Id").len(), 1);
    assert!(gh.team_lookups() >= 1);
    drop(s);
    gh.finish();
}

#[test]
fn an_invited_member_and_a_member_of_another_team_are_refused_naming_the_file() {
    let (w, gh) = teams_world(&[]);
    let pr = gh.prs()[0].clone();
    let s = crate::serve::serve_app(&w, &gh, "srv");

    // erin's invitation to @acme/checkout is pending: it does not count, and she is told so.
    let said = approve_by_comment(&gh, pr.number, 9002, "erin");
    assert!(
        said.contains("not a code owner") && said.contains("apps/checkout/prod/") && said.contains("is owned by"),
        "{said}"
    );
    assert!(said.contains("pending"), "{said}");
    // mallory is in @acme/sre, which owns nothing the rollback changes.
    let said = approve_by_comment(&gh, pr.number, 9003, "mallory");
    assert!(
        said.contains("not a code owner") && said.contains("apps/checkout/prod/") && said.contains("is owned by"),
        "{said}"
    );
    assert_eq!(gh.prs()[0].state, "open", "nothing merged");
    assert!(!canary_restored(&w));
    assert!(gh.team_lookups() >= 2, "GitHub was asked");
    drop(s);
    gh.finish();
}

#[test]
fn without_members_read_nobody_is_a_member_through_github_the_answer_says_so_and_the_directory_still_counts() {
    let (w, gh) = teams_world(&[("directory.github_teams", json!({ "acme/checkout": ["frank"] }))]);
    gh.gh.lock().unwrap().app_permissions = Some(json!({ "metadata": "read", "contents": "write",
        "pull_requests": "write", "issues": "write", "checks": "write", "statuses": "read" }));
    let pr = gh.prs()[0].clone();
    let s = crate::serve::serve_app(&w, &gh, "srv");

    let said = approve_by_comment(&gh, pr.number, 9004, "dave");
    assert!(said.contains("not a code owner"), "{said}");
    assert!(said.contains("membership not known") && said.contains("Members permission"), "{said}");
    assert_eq!(gh.prs()[0].state, "open", "nothing merged");

    // frank is in @acme/checkout by directory.github_teams: that needs no forge.
    assert_eq!(comment_on(&gh, pr.number, 9005, "frank"), 200);
    wait_for("the merge", 30, || gh.prs()[0].state == "closed");
    assert!(canary_restored(&w));
    drop(s);
    gh.finish();
}

#[test]
fn a_slack_user_linked_to_a_github_member_of_the_owning_team_approves_from_slack() {
    let (w, gh, id) = token_forge_world(|_| json!({ "dave": ["slack:UDAVE", "github:dave"], "bob": ["slack:UBOB"] }));
    // The GitHub forge brings its own runtime: the engine is built outside the router's.
    let app = crate::slack::app(&w);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let now = w.now().as_second();
    let (url, rx) = crate::slack::response_server();
    let slash = |user: &str, trigger: &str| {
        let body = crate::slack::form(user, &format!("approve {id}"), trigger, &url);
        rt.block_on(crate::slack::send(&app, crate::slack::signed(&body, now, &[])))
    };

    // bob has no GitHub account to be a member through.
    slash("UBOB", "trig-bob");
    let posted = crate::slack::next(&rx);
    assert!(posted["text"].as_str().unwrap().contains("not a code owner"), "{posted}");
    // dave's Slack account is his GitHub login, which GitHub says is in @acme/checkout.
    slash("UDAVE", "trig-dave");
    let posted = crate::slack::next(&rx);
    assert!(posted["text"].as_str().unwrap().contains("merged"), "{posted}");
    assert!(canary_restored(&w));
    assert_eq!(gh.team_lookups(), 1, "asked about dave once; bob has no login to ask about");
    // Asked again within five minutes, GitHub's answer is the one kept.
    slash("UDAVE", "trig-dave-again");
    let posted = crate::slack::next(&rx);
    assert!(posted["text"].as_str().unwrap().contains("no open proposal"), "{posted}");
    assert_eq!(gh.team_lookups(), 1, "the answer was kept");
    gh.finish();
}

#[test]
fn check_forge_says_codeowners_in_chatops_needs_members_read() {
    let (w, gh) = teams_world(&[]);
    let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let out = w.run_cli(&["check", "--forge"]);
    assert!(!said(&out).contains("members"), "granted: {}", said(&out));
    gh.gh.lock().unwrap().app_permissions = Some(json!({ "metadata": "read", "contents": "write",
        "pull_requests": "write", "issues": "write", "checks": "write", "statuses": "read" }));
    let out = w.run_cli(&["check", "--forge"]);
    let text = said(&out);
    assert!(text.contains("needs members permission Read-only (has none) to codeowners in chatops"), "{text}");
    gh.finish();
}

#[test]
fn at_the_cli_a_person_whose_key_is_listed_with_a_github_member_of_the_owning_team_approves() {
    let mut keys = None;
    let (w, gh, id) = token_forge_world(|w| {
        let (dave, dave_pub) = crate::signing::person_key(w, "dave");
        let (bob, bob_pub) = crate::signing::person_key(w, "bob");
        keys = Some((dave, bob));
        json!({ "dave": ["github:dave", dave_pub], "bob": ["github:bob", bob_pub] })
    });
    let (dave, bob) = keys.unwrap();
    let approve = |key: &str| {
        let out = w.run_cli(&["approve", &id, "--signing-key", key]);
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };

    // bob's login is in no team GitHub knows of.
    let (code, said) = approve(&bob);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("not a code owner"), "{said}");
    // dave's key is listed with github:dave, whom GitHub says is in @acme/checkout.
    let (code, said) = approve(&dave);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("merged"), "{said}");
    assert!(canary_restored(&w));
    gh.finish();
}
