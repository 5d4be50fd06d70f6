use super::*;

/// (pattern, path, owned?) as GitHub decides it: the examples of GitHub's "About code owners"
/// page, and the corners of gitignore's rules as GitHub applies them.
const TABLE: &[(&str, &str, bool)] = &[
    // A bare name: a file or directory of that name at any depth, and all below it.
    ("foo", "foo", true),
    ("foo", "foo.txt", false),
    ("foo", "foo/bar", true),
    ("foo", "bar/foo", true),
    ("foo", "bar/foo/baz", true),
    ("foo", "bar/baz", false),
    // A leading `/` anchors at the root.
    ("/foo", "foo", true),
    ("/foo", "foo/bar/baz", true),
    ("/foo", "bar/foo", false),
    ("/foo", "fool.txt", false),
    // A trailing `/`: only what is inside a directory of that name.
    ("foo/", "foo", false),
    ("foo/", "foo/bar", true),
    ("foo/", "bar/foo/baz/qux", true),
    ("foo/", "bar/foo", false),
    ("/foo/", "bar/foo/baz", false),
    ("/foo/", "foo/bar/baz", true),
    // A `/` inside anchors too.
    ("foo/bar", "foo/bar", true),
    ("foo/bar", "foo/bar/baz", true),
    ("foo/bar", "foo/bart", false),
    ("foo/bar", "baz/foo/bar", false),
    ("foo/bar/", "foo/bar", false),
    ("foo/bar/", "foo/bar/baz", true),
    // `*` within one component.
    ("*", "anything/at/all", true),
    ("*.js", "src/app.js", true),
    ("*.js", "app.jsx", false),
    ("f*", "bar/foo/baz", true),
    ("f*", "xfoo", false),
    ("/*", "foo", true),
    ("/*", "foo/bar", false),
    ("/f*", "foo/bar/baz", true),
    ("/f*", "bar/foo", false),
    ("f*/", "foo", false),
    ("f*/", "bar/foo/baz", true),
    ("/*/", "foo", false),
    ("/*/", "bar/foo/baz", true),
    // `docs/*`: the files directly in docs/, not deeper (GitHub's own example).
    ("docs/*", "docs/getting-started.md", true),
    ("docs/*", "docs/build-app/troubleshooting.md", false),
    ("docs/*", "docs", false),
    ("foo/*.txt", "foo/bar.txt", true),
    ("foo/*.txt", "foo/bar/baz.txt", false),
    ("foo/*.txt", "qux/foo/bar.txt", false),
    ("foo/*/baz", "foo/bar/baz/qux", true),
    ("foo/*/baz", "foo/baz", false),
    // `?` is one character, never `/`.
    ("f?o", "foo", true),
    ("f?o", "fo", false),
    ("f?o", "fooo", false),
    ("a?b", "a/b", false),
    // Escapes make `*` and `?` literal.
    ("f\\*o", "f*o", true),
    ("f\\*o", "foo", false),
    ("f\\?o", "f?o", true),
    // `**`.
    ("**/logs", "build/logs/x.log", true),
    ("**/logs", "deeply/nested/logs/a", true),
    ("**/logs", "logs", true),
    ("**/foo/bar", "qux/foo/bar/baz", true),
    ("**/foo/bar", "foo/baz/bar", false),
    ("**/*bar*", "foo/barrio", true),
    ("foo/bar/**", "foo/bar", false),
    ("foo/bar/**", "foo/bar/baz/qux", true),
    ("foo/bar/**", "qux/foo/bar/baz", false),
    ("foo/**/bar", "foo/bar", true),
    ("foo/**/bar", "foo/qux/quux/bar/baz", true),
    ("foo/**/bar", "qux/foo/bar", false),
    ("foo/**/", "foo", false),
    ("foo/**/", "foo/bar", true),
    ("foo/**/bar/b*", "foo/bar/baz", true),
    ("foo/**/bar/b*", "foo/bar/qux", false),
    ("foo/**/bar/b*", "foo/qux/bar/baz", true),
    // `[` and `]` are not ranges in GitHub's flavour.
    ("a[bc]", "ab", false),
    ("a[bc]", "a[bc]", true),
    // rollbackd's shape: apps/<service>/<env>/...
    ("/apps/checkout/", "apps/checkout/prod/deployment.yaml", true),
    ("/apps/checkout/", "apps/cart/prod/deployment.yaml", false),
    ("apps/*/prod/", "apps/cart/prod/deployment.yaml", true),
    ("apps/*/prod/", "apps/cart/staging/deployment.yaml", false),
];

#[test]
fn patterns_match_as_github_matches_them() {
    let mut wrong = Vec::new();
    for (pattern, path, owned) in TABLE {
        let p = Pattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        if p.matches(path) != *owned {
            wrong.push(format!("{pattern} vs {path}: expected {owned}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_last_matching_line_wins_and_a_line_without_owners_unowns() {
    let file = "\
# default owners
*       @global-owner1 @global-owner2
*.js    @js-owner #This is an inline comment.
/build/logs/ @doctocat
/apps/ @octocat
/apps/github
apps/checkout/ @Acme/Checkout-Team alice@example.com
";
    let c = Codeowners::parse("CODEOWNERS", file.as_bytes()).unwrap();
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
    assert_eq!(c.owners_of("README.md"), [Owner::User("global-owner1".into()), Owner::User("global-owner2".into())]);
    assert_eq!(c.owners_of("web/app.js"), [Owner::User("js-owner".into())], "the comment is no owner");
    assert_eq!(c.owners_of("build/logs/a.log"), [Owner::User("doctocat".into())]);
    assert_eq!(c.owners_of("apps/x.yaml"), [Owner::User("octocat".into())]);
    assert!(c.owners_of("apps/github/x.yaml").is_empty(), "a pattern with no owners leaves its files unowned");
    assert_eq!(
        c.owners_of("apps/checkout/prod/deployment.yaml"),
        [Owner::Team("acme/checkout-team".into()), Owner::Email("alice@example.com".into())]
    );
    assert_eq!(c.rule_for("apps/checkout/prod/deployment.yaml").map(|r| r.line), Some(7));
}

#[test]
fn lines_github_skips_are_skipped_with_the_reason() {
    let file = "\
* @ok
!negated @someone
\\#not-a-comment @someone
docs/ not-an-owner
/  @someone
a//b @someone
";
    let c = Codeowners::parse(".github/CODEOWNERS", file.as_bytes()).unwrap();
    assert_eq!(c.rules.len(), 1);
    let lines: Vec<usize> = c.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6], "{:?}", c.skipped);
    assert!(c.skipped[0].reason.contains("negation"));
    assert!(c.skipped[2].reason.contains("not @user"));
    // A skipped line changes nothing: `docs/` stays with `*`.
    assert_eq!(c.owners_of("docs/a.md"), [Owner::User("ok".into())]);
}

#[test]
fn a_file_past_githubs_bound_is_refused_and_hostile_bytes_are_read_safely() {
    assert!(Codeowners::parse("CODEOWNERS", &vec![b'#'; MAX_BYTES]).is_err());
    let c = Codeowners::parse("CODEOWNERS", b"\xff\xfe* @a\n\x00 @b\n").unwrap();
    assert!(c.rules.len() + c.skipped.len() == 2, "{c:?}");
    let deep = format!("{} @a", vec!["**"; 300].join("/"));
    let c = Codeowners::parse("CODEOWNERS", deep.as_bytes()).unwrap();
    assert_eq!(c.rules.len(), 1, "consecutive ** are one");
    let long = format!("{} @a", vec!["a*"; 300].join("/"));
    assert!(Codeowners::parse("CODEOWNERS", long.as_bytes()).unwrap().rules.is_empty());
}

#[test]
fn a_person_owns_through_every_linked_account_and_team() {
    use crate::domain::principal::{Directory, Principal};
    let dir = Directory {
        github_teams: [("acme/checkout".into(), vec!["Bob".into()])].into(),
        people: [
            ("alice".into(), vec!["slack:UALICE".into(), "github:Alice".into()]),
            ("bob".into(), vec!["slack:UBOB".into(), "github:bob".into()]),
        ]
        .into(),
        ..Directory::default()
    };
    let c = Codeowners::parse("CODEOWNERS", b"/apps/checkout/ @alice @acme/checkout\n/apps/cart/ @carol\n").unwrap();
    let files = vec!["apps/checkout/prod/a.yaml".to_string()];
    let slack_alice = identities(&Principal::new("slack:UALICE").with_groups(&dir), &dir);
    assert_eq!(not_owned(&c, &files, &slack_alice), None, "{slack_alice:?}");
    let slack_bob = identities(&Principal::new("slack:UBOB").with_groups(&dir), &dir);
    assert_eq!(not_owned(&c, &files, &slack_bob), None, "through acme/checkout: {slack_bob:?}");
    let stranger = identities(&Principal::new("slack:UEVE").with_groups(&dir), &dir);
    assert!(not_owned(&c, &files, &stranger).is_some_and(|why| why.contains("apps/checkout/prod/a.yaml")));
    let both = vec!["apps/checkout/prod/a.yaml".to_string(), "apps/cart/prod/a.yaml".to_string()];
    let why = not_owned(&c, &both, &slack_alice).unwrap();
    assert!(why.contains("apps/cart/prod/a.yaml") && why.contains("@carol"), "{why}");
    let unowned = vec!["README.md".to_string()];
    assert!(not_owned(&c, &unowned, &slack_alice).is_some_and(|why| why.contains("no owner")));
}
