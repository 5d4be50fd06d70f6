//! Differences between two trees that never look inside a subtree whose id is the same on both
//! sides. libgit2's tree diff and merge visit every subtree; on a 10,000-file config repo where a
//! deploy changes one file, this reads a handful of trees instead of a thousand.

use git2::{FileMode, Oid, Repository, Tree};

use super::tree_edit::Entry;

/// One changed file: its path and the entry on each side (`None`: absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub path: String,
    pub old: Entry,
    pub new: Entry,
}

fn is_tree(mode: i32) -> bool {
    mode == i32::from(FileMode::Tree)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") }
}

/// Files that differ between the entries `a` and `b` found at `prefix` (either may be a tree, a
/// file or absent), sorted by path.
pub(crate) fn changes(repo: &Repository, prefix: &str, a: Entry, b: Entry) -> Result<Vec<Change>, git2::Error> {
    let mut out = Vec::new();
    diff_entries(repo, prefix, a, b, &mut out)?;
    out.sort_by(|x, y| x.path.cmp(&y.path));
    Ok(out)
}

pub(crate) fn tree_changes(repo: &Repository, a: &Tree<'_>, b: &Tree<'_>) -> Result<Vec<Change>, git2::Error> {
    let tree = i32::from(FileMode::Tree);
    changes(repo, "", Some((a.id(), tree)), Some((b.id(), tree)))
}

fn diff_entries(repo: &Repository, path: &str, a: Entry, b: Entry, out: &mut Vec<Change>) -> Result<(), git2::Error> {
    if a == b {
        return Ok(());
    }
    match (a, b) {
        (Some((ta, ma)), Some((tb, mb))) if is_tree(ma) && is_tree(mb) => diff_trees(repo, path, ta, tb, out),
        _ => {
            // A file on either side is one change; a tree on either side contributes its files.
            let file = |e: Entry| e.filter(|(_, m)| !is_tree(*m));
            if file(a).is_some() || file(b).is_some() {
                out.push(Change { path: path.to_string(), old: file(a), new: file(b) });
            }
            if let Some((t, _)) = a.filter(|(_, m)| is_tree(*m)) {
                list_files(repo, path, t, &mut |p, e| out.push(Change { path: p, old: Some(e), new: None }))?;
            }
            if let Some((t, _)) = b.filter(|(_, m)| is_tree(*m)) {
                list_files(repo, path, t, &mut |p, e| out.push(Change { path: p, old: None, new: Some(e) }))?;
            }
            Ok(())
        }
    }
}

fn diff_trees(repo: &Repository, path: &str, a: Oid, b: Oid, out: &mut Vec<Change>) -> Result<(), git2::Error> {
    let (ta, tb) = (repo.find_tree(a)?, repo.find_tree(b)?);
    // Tree entries are sorted by name, so one merge pass pairs them.
    let (mut ia, mut ib) = (ta.iter().peekable(), tb.iter().peekable());
    loop {
        let (ea, eb) = (ia.peek(), ib.peek());
        let (name, left, right) = match (ea, eb) {
            (None, None) => return Ok(()),
            (Some(x), None) => (x.name_bytes().to_vec(), true, false),
            (None, Some(y)) => (y.name_bytes().to_vec(), false, true),
            (Some(x), Some(y)) => match git_order(x, y) {
                std::cmp::Ordering::Less => (x.name_bytes().to_vec(), true, false),
                std::cmp::Ordering::Greater => (y.name_bytes().to_vec(), false, true),
                std::cmp::Ordering::Equal => (x.name_bytes().to_vec(), true, true),
            },
        };
        let ea = if left { ia.next().map(|e| (e.id(), e.filemode())) } else { None };
        let eb = if right { ib.next().map(|e| (e.id(), e.filemode())) } else { None };
        diff_entries(repo, &join(path, &String::from_utf8_lossy(&name)), ea, eb, out)?;
    }
}

/// Git orders tree entries as if directory names ended in `/`.
fn git_order(x: &git2::TreeEntry<'_>, y: &git2::TreeEntry<'_>) -> std::cmp::Ordering {
    let key = |e: &git2::TreeEntry<'_>| {
        let mut k = e.name_bytes().to_vec();
        if is_tree(e.filemode()) {
            k.push(b'/');
        }
        k
    };
    key(x).cmp(&key(y))
}

fn list_files(
    repo: &Repository,
    prefix: &str,
    tree: Oid,
    f: &mut dyn FnMut(String, (Oid, i32)),
) -> Result<(), git2::Error> {
    let t = repo.find_tree(tree)?;
    for e in t.iter() {
        let p = join(prefix, &String::from_utf8_lossy(e.name_bytes()));
        if is_tree(e.filemode()) {
            list_files(repo, &p, e.id(), f)?;
        } else {
            f(p, (e.id(), e.filemode()));
        }
    }
    Ok(())
}

/// The deepest directory containing every path, `""` for the root.
pub(crate) fn common_dir<'a>(paths: impl IntoIterator<Item = &'a str>) -> String {
    let mut common: Option<Vec<&str>> = None;
    for p in paths {
        let dirs: Vec<&str> = p.split('/').collect();
        let dirs = &dirs[..dirs.len().saturating_sub(1)];
        common = Some(match common {
            None => dirs.to_vec(),
            Some(c) => c.iter().zip(dirs).take_while(|(a, b)| a == b).map(|(a, _)| *a).collect(),
        });
    }
    common.unwrap_or_default().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_dir_of_paths() {
        assert_eq!(common_dir(["apps/a/prod/x.yaml", "apps/a/prod/y/z.yaml"]), "apps/a/prod");
        assert_eq!(common_dir(["apps/a/prod/x.yaml", "apps/b/prod/x.yaml"]), "apps");
        assert_eq!(common_dir(["README.md"]), "");
        assert_eq!(common_dir(Vec::<&str>::new()), "");
    }
}
