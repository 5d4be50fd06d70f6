//! Differences between two trees that never look inside a subtree whose id is the same on both
//! sides. libgit2's tree diff and merge visit every subtree; on a 10,000-file config repo where a
//! deploy changes one file, this reads a handful of trees instead of a thousand.
//!
//! Every walk here keeps its own stack of trees still to visit instead of recursing: a tree is
//! input (a fork's pull request, anything pushed to the config repo), and a tree 8,000 levels
//! deep must cost a bounded error, not the thread's stack. Each walk also stops at [`Limits`].

use git2::{FileMode, Oid, Repository, Tree};

use super::GitError;
use super::tree_edit::Entry;

/// How deep a tree rollbackd reads may be: git's own default for `core.maxTreeDepth` (git
/// 2.44). No config repo comes close; a deeper tree is someone testing the walker.
pub(crate) const MAX_TREE_DEPTH: usize = 4096;

/// How far one walk may go before it gives up with [`WalkError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Directory levels below the walk's start.
    pub depth: usize,
    /// Changed files reported.
    pub paths: usize,
    /// Tree entries looked at (bounds trees that differ but hold no files, such as nested
    /// empty directories).
    pub entries: usize,
}

impl Limits {
    /// For trees of the config repo's own history, which rollbackd plans on: only the depth is
    /// bounded (a commit that changes 50,000 files is still a commit to plan).
    pub(crate) const HISTORY: Limits = Limits { depth: MAX_TREE_DEPTH, paths: usize::MAX, entries: usize::MAX };
}

/// A bound a walk or a gate run reached: what rollbackd refuses to read further, said so a
/// person can act on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Bound {
    #[error("a tree more than {limit} levels deep")]
    Depth { limit: usize },
    #[error("more than {limit} changed paths")]
    Paths { limit: usize },
    #[error("more than {limit} tree entries to compare")]
    Entries { limit: usize },
    #[error("more than {} MiB of files to read", limit >> 20)]
    Bytes { limit: u64 },
}

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
pub(crate) fn changes(
    repo: &Repository,
    prefix: &str,
    a: Entry,
    b: Entry,
    limits: Limits,
) -> Result<Vec<Change>, GitError> {
    let mut out = Vec::new();
    let mut looked = 0usize;
    // Pairs still to compare: (path, depth below `prefix`, left, right).
    let mut todo: Vec<(String, usize, Entry, Entry)> = vec![(prefix.to_string(), 0, a, b)];
    while let Some((path, depth, a, b)) = todo.pop() {
        if a == b {
            continue;
        }
        // A file on either side is one change; a tree on either side contributes its files.
        let file = |e: Entry| e.filter(|(_, m)| !is_tree(*m));
        let tree = |e: Entry| e.filter(|(_, m)| is_tree(*m)).map(|(t, _)| t);
        if file(a).is_some() || file(b).is_some() {
            if out.len() >= limits.paths {
                return Err(Bound::Paths { limit: limits.paths }.into());
            }
            out.push(Change { path: path.clone(), old: file(a), new: file(b) });
        }
        let (ta, tb) = (tree(a), tree(b));
        if ta.is_none() && tb.is_none() {
            continue;
        }
        if depth >= limits.depth {
            return Err(Bound::Depth { limit: limits.depth }.into());
        }
        let (ta, tb) = (ta.map(|t| repo.find_tree(t)).transpose()?, tb.map(|t| repo.find_tree(t)).transpose()?);
        looked = looked.saturating_add(ta.as_ref().map_or(0, Tree::len) + tb.as_ref().map_or(0, Tree::len));
        if looked > limits.entries {
            return Err(Bound::Entries { limit: limits.entries }.into());
        }
        for (name, ea, eb) in pair_entries(ta.as_ref(), tb.as_ref()) {
            todo.push((join(&path, &name), depth + 1, ea, eb));
        }
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    Ok(out)
}

pub(crate) fn tree_changes(
    repo: &Repository,
    a: &Tree<'_>,
    b: &Tree<'_>,
    limits: Limits,
) -> Result<Vec<Change>, GitError> {
    let tree = i32::from(FileMode::Tree);
    changes(repo, "", Some((a.id(), tree)), Some((b.id(), tree)), limits)
}

/// The entries of two trees (either may be absent) paired by name: tree entries are sorted, so
/// one merge pass pairs them.
fn pair_entries(ta: Option<&Tree<'_>>, tb: Option<&Tree<'_>>) -> Vec<(String, Entry, Entry)> {
    let mut ia = ta.into_iter().flat_map(Tree::iter).peekable();
    let mut ib = tb.into_iter().flat_map(Tree::iter).peekable();
    let mut out = Vec::new();
    loop {
        let (left, right) = match (ia.peek(), ib.peek()) {
            (None, None) => return out,
            (Some(_), None) => (true, false),
            (None, Some(_)) => (false, true),
            (Some(x), Some(y)) => match git_order(x, y) {
                std::cmp::Ordering::Less => (true, false),
                std::cmp::Ordering::Greater => (false, true),
                std::cmp::Ordering::Equal => (true, true),
            },
        };
        let ea = if left { ia.next() } else { None };
        let eb = if right { ib.next() } else { None };
        let name = ea.as_ref().or(eb.as_ref()).map(|e| String::from_utf8_lossy(e.name_bytes()).into_owned());
        let entry = |e: Option<git2::TreeEntry<'_>>| e.map(|e| (e.id(), e.filemode()));
        out.push((name.unwrap_or_default(), entry(ea), entry(eb)));
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

/// Every file in `tree` (found at `prefix`), with its entry, in no particular order; `keep`
/// says which paths to return. Bounded in depth like every walk here.
pub(crate) fn files(
    repo: &Repository,
    prefix: &str,
    tree: Oid,
    limits: Limits,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, Oid)>, GitError> {
    let tree_mode = i32::from(FileMode::Tree);
    let mut out = Vec::new();
    for c in changes(repo, prefix, None, Some((tree, tree_mode)), limits)? {
        // A submodule (a commit entry) is not a file to read.
        if let Some((oid, mode)) = c.new
            && mode != i32::from(FileMode::Commit)
            && keep(&c.path)
        {
            out.push((c.path, oid));
        }
    }
    Ok(out)
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

    /// `levels` directories `d/d/...` over one file, as a root tree.
    fn deep(repo: &Repository, levels: usize) -> Oid {
        let blob = repo.blob(b"x\n").unwrap();
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("f", blob, 0o100644).unwrap();
        let mut tree = b.write().unwrap();
        for _ in 0..levels {
            let mut b = repo.treebuilder(None).unwrap();
            b.insert("d", tree, 0o040000).unwrap();
            tree = b.write().unwrap();
        }
        tree
    }

    #[test]
    fn deep_trees_are_walked_on_a_small_stack_and_stop_at_the_depth_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let repo = Repository::init_bare(&path).unwrap();
        let (near, too_deep) = (deep(&repo, MAX_TREE_DEPTH - 1), deep(&repo, 8_000));
        // 512 KiB of stack, a quarter of a spawned thread's default: the walk's stack use must
        // not grow with the tree's depth.
        let walked = std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(move || {
                let repo = Repository::open_bare(&path).unwrap();
                let empty = repo.find_tree(repo.treebuilder(None).unwrap().write().unwrap()).unwrap();
                let near = repo.find_tree(near).unwrap();
                let changes = tree_changes(&repo, &empty, &near, Limits::HISTORY).unwrap();
                let too_deep = repo.find_tree(too_deep).unwrap();
                let refused = tree_changes(&repo, &empty, &too_deep, Limits::HISTORY).unwrap_err();
                let listed = files(&repo, "", too_deep.id(), Limits::HISTORY, &|_| true).unwrap_err();
                (changes.len(), changes[0].path.len(), refused.to_string(), listed.to_string())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!((walked.0, walked.1), (1, 2 * (MAX_TREE_DEPTH - 1) + 1));
        assert_eq!(walked.2, "a tree more than 4096 levels deep");
        assert_eq!(walked.3, walked.2);
    }

    #[test]
    fn a_walk_stops_at_its_path_bound() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let empty = repo.find_tree(repo.treebuilder(None).unwrap().write().unwrap()).unwrap();
        let mut b = repo.treebuilder(None).unwrap();
        for i in 0..11 {
            b.insert(format!("f{i}"), repo.blob(format!("{i}").as_bytes()).unwrap(), 0o100644).unwrap();
        }
        let many = repo.find_tree(b.write().unwrap()).unwrap();
        let limits = Limits { paths: 10, ..Limits::HISTORY };
        let err = tree_changes(&repo, &empty, &many, limits).unwrap_err();
        assert!(matches!(err, GitError::Bound(Bound::Paths { limit: 10 })), "{err}");
        assert_eq!(tree_changes(&repo, &empty, &many, Limits { paths: 11, ..limits }).unwrap().len(), 11);
    }
}
