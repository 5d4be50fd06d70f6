//! Editing a tree in the object database without an index or a worktree: replace (or remove) the
//! entry at a path and rebuild only the trees along that path.

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
    if parts.is_empty() {
        // The whole tree is replaced.
        return Ok(match entry {
            Some((oid, mode)) if mode == i32::from(FileMode::Tree) => Some(oid),
            _ => None,
        });
    }
    set_parts(repo, root, &parts, entry)
}

fn set_parts(repo: &Repository, dir: Option<Oid>, parts: &[&str], entry: Entry) -> Result<Option<Oid>, git2::Error> {
    let tree = dir.map(|oid| repo.find_tree(oid)).transpose()?;
    let mut builder = repo.treebuilder(tree.as_ref())?;
    let name = parts[0];
    let new_entry = if parts.len() == 1 {
        entry
    } else {
        let child = tree
            .as_ref()
            .and_then(|t| t.get_name(name))
            .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
            .map(|e| e.id());
        set_parts(repo, child, &parts[1..], entry)?.map(|oid| (oid, i32::from(FileMode::Tree)))
    };
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
    if builder.is_empty() {
        return Ok(None);
    }
    builder.write().map(Some)
}

/// The entry at `path` in `root`, as (id, mode).
pub(crate) fn entry_at(root: &git2::Tree<'_>, path: &str) -> Entry {
    if path.is_empty() {
        return Some((root.id(), i32::from(FileMode::Tree)));
    }
    root.get_path(std::path::Path::new(path)).ok().map(|e| (e.id(), e.filemode()))
}
