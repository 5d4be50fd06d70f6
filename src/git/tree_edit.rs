//! Editing a tree in the object database without an index or a worktree: replace (or remove) the
//! entry at a path and rebuild only the trees along that path. Both walk the path with a loop,
//! not recursion: a path can be as deep as a tree someone pushed.

use git2::{FileMode, Oid, Repository};

/// An entry to put at a path, or `None` to remove it.
pub(crate) type Entry = Option<(Oid, i32)>;

/// Returns the id of `root` with `path` set to `entry`. Empty directories left behind are removed.
pub(crate) fn set_path(
    repo: &Repository,
    root: Option<Oid>,
    path: &str,
    entry: Entry,
) -> Result<Option<Oid>, git2::Error> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some((_, dirs)) = parts.split_last() else {
        // The whole tree is replaced.
        return Ok(match entry {
            Some((oid, mode)) if mode == i32::from(FileMode::Tree) => Some(oid),
            _ => None,
        });
    };
    // Down: the tree at each directory along the path (absent where there is none yet).
    let mut trees: Vec<Option<git2::Tree<'_>>> = Vec::with_capacity(parts.len());
    let mut dir = root;
    for name in dirs {
        let tree = dir.map(|oid| repo.find_tree(oid)).transpose()?;
        dir = tree
            .as_ref()
            .and_then(|t| t.get_name(name))
            .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
            .map(|e| e.id());
        trees.push(tree);
    }
    trees.push(dir.map(|oid| repo.find_tree(oid)).transpose()?);
    // Up: each tree rebuilt with its child's new entry, from the deepest.
    let mut new_entry = entry;
    for (tree, name) in trees.iter().zip(&parts).rev() {
        let mut builder = repo.treebuilder(tree.as_ref())?;
        match new_entry {
            Some((oid, mode)) => {
                builder.insert(name, oid, mode)?;
            }
            None => {
                if builder.get(name)?.is_some() {
                    builder.remove(name)?;
                }
            }
        }
        new_entry = if builder.is_empty() { None } else { Some((builder.write()?, i32::from(FileMode::Tree))) };
    }
    Ok(new_entry.map(|(oid, _)| oid))
}

/// The entry at `path` in `root`, as (id, mode).
pub(crate) fn entry_at(repo: &Repository, root: &git2::Tree<'_>, path: &str) -> Entry {
    if path.is_empty() {
        return Some((root.id(), i32::from(FileMode::Tree)));
    }
    // libgit2's `git_tree_entry_bypath` recurses once per component; this loops.
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    let mut tree = root.clone();
    while let Some(name) = parts.next() {
        let found = tree.get_name(name).map(|e| (e.id(), e.filemode()))?;
        if parts.peek().is_none() {
            return Some(found);
        }
        if found.1 != i32::from(FileMode::Tree) {
            return None;
        }
        tree = repo.find_tree(found.0).ok()?;
    }
    None
}
