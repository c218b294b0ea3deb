//! Which files a source's `path` names: one file, a folder's files, or a glob, relative to the
//! project root or as an object-store URL (`s3://bucket/raw/*.csv`), sorted, hidden files
//! (`.x`, `_x`) left out.

use std::path::{Path, PathBuf};

use datafusion::prelude::SessionContext;

use crate::config::interpolate::Redactor;
use crate::error::{Error, Result};
use crate::store::{self, Location};

/// Expands `path` (a file, a folder, or a glob; local relative to `root`, or an object-store
/// URL read through the session's object stores) into sorted files.
///
/// # Errors
/// [`Error::Source`] when nothing matches, the pattern is invalid or the store cannot be
/// listed.
pub async fn expand_files(
    ctx: &SessionContext,
    root: &Path,
    source: &str,
    template: &str,
    redactor: &Redactor,
) -> Result<Vec<Location>> {
    let resolved = redactor
        .resolve_path(template, root)
        .map_err(|e| Error::source(source, template, e))?;
    if store::is_url(&resolved) {
        return expand_objects(ctx, source, template, &resolved, redactor).await;
    }
    Ok(expand_local(root, source, template, &resolved)?
        .into_iter()
        .map(Location::Local)
        .collect())
}

/// One file's Hive partition values, `(key, value)` in path order.
pub type PartitionValues = Vec<(String, Option<String>)>;

/// The Hive partition values of each file (`…/year=2024/month=01/x.csv` → `year`, `month`),
/// read from the folders of its path relative to `root` (a local file) or of its key (an
/// object): `key=value` segments, values percent-decoded, `__HIVE_DEFAULT_PARTITION__` as null
/// (Hive's and Spark's layout). Partition columns exist only when every file has the same keys
/// in the same order; otherwise every file gets none.
pub fn hive_partitions(root: &Path, files: &[Location]) -> Vec<PartitionValues> {
    let of = |file: &Location| -> PartitionValues {
        let path = match file {
            Location::Local(p) => p
                .strip_prefix(root)
                .unwrap_or(p)
                .to_string_lossy()
                .to_string(),
            Location::Object { url, .. } => store::object_path(url).to_string(),
        };
        let mut segments: Vec<&str> = path.split('/').collect();
        segments.pop();
        segments
            .into_iter()
            .filter_map(|s| s.split_once('='))
            .filter(|(k, _)| is_partition_key(k))
            .map(|(k, v)| {
                let v = store::percent_decode(v);
                let v = (!v.is_empty() && v != "__HIVE_DEFAULT_PARTITION__").then_some(v);
                (k.to_string(), v)
            })
            .collect()
    };
    let all: Vec<PartitionValues> = files.iter().map(of).collect();
    let keys = |p: &PartitionValues| p.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    let same = all.windows(2).all(|w| keys(&w[0]) == keys(&w[1]));
    if same {
        all
    } else {
        vec![Vec::new(); files.len()]
    }
}

fn is_partition_key(k: &str) -> bool {
    k.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The objects an object-store URL names.
async fn expand_objects(
    ctx: &SessionContext,
    source: &str,
    template: &str,
    resolved: &str,
    redactor: &Redactor,
) -> Result<Vec<Location>> {
    let err = |e: String| Error::source(source, template, redactor.redact(&e));
    let url = store::parse_url(resolved).map_err(|e| err(e.into()))?;
    let client = ctx
        .runtime_env()
        .object_store_registry
        .get_store(&url)
        .map_err(|e| err(e.to_string()))?;
    let urls = store::list(&client, &url)
        .await
        .map_err(|e| err(format!("cannot list {}: {e}", url.as_str())))?;
    if urls.is_empty() {
        return Err(err(
            "no object matches this URL (a folder lists the objects directly under it; use a glob such as `raw/**/*.csv` for deeper ones)".into(),
        ));
    }
    Ok(urls
        .into_iter()
        .map(|url| Location::Object {
            url,
            store: client.clone(),
        })
        .collect())
}

/// The local files `resolved` (relative to `root`) names.
fn expand_local(root: &Path, source: &str, template: &str, resolved: &str) -> Result<Vec<PathBuf>> {
    let full = root.join(resolved);
    let mut files: Vec<PathBuf> = if resolved.contains(['*', '?', '[']) {
        glob_files(root, resolved).map_err(|e| Error::source(source, template, e))?
    } else if full.is_dir() {
        std::fs::read_dir(&full)
            .map_err(|e| Error::source(source, template, format!("cannot list folder: {e}")))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && !is_hidden(p))
            .collect()
    } else if full.is_file() {
        vec![full.clone()]
    } else {
        Vec::new()
    };
    files.sort();
    if files.is_empty() {
        return Err(Error::source(
            source,
            template,
            "no file matches this path (paths are relative to the folder holding sluice.toml)",
        ));
    }
    Ok(files)
}

/// The files under `root` matching the glob `pattern` (relative to `root` unless absolute),
/// skipping hidden files and folders. Symbolic links are followed; a link that loops back
/// to a folder above it is an error, not an endless walk.
fn glob_files(root: &Path, pattern: &str) -> std::result::Result<Vec<PathBuf>, String> {
    // Only the user's part is a pattern; the project root is taken literally.
    let full = if Path::new(pattern).is_absolute() {
        pattern.to_string()
    } else {
        format!(
            "{}/{pattern}",
            glob::Pattern::escape(&root.to_string_lossy())
        )
    };
    let matcher = glob::Pattern::new(&full).map_err(|e| format!("invalid glob: {e}"))?;
    let options = glob::MatchOptions {
        require_literal_separator: true,
        require_literal_leading_dot: true,
        ..Default::default()
    };
    let base = crate::config::guard::glob_base(pattern);
    let base = root.join(&base);
    // Without `**`, a match is exactly as deep as the pattern.
    let recursive = pattern.contains("**");
    let depth = if recursive {
        usize::MAX
    } else {
        Path::new(&full).components().count() - base.components().count()
    };
    let walk = walkdir::WalkDir::new(&base)
        .follow_links(true)
        .max_depth(depth)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    let mut files = Vec::new();
    for entry in walk {
        let entry = match entry {
            Ok(e) => e,
            // Only a `**` pattern walks into the loop; a fixed-depth one stops above it.
            Err(e) if recursive && e.loop_ancestor().is_some() => {
                return Err(format!(
                    "the folder {} links back to {}, a folder above it (a symbolic link loop); remove the link or narrow the glob",
                    e.path().map(|p| p.display().to_string()).unwrap_or_default(),
                    e.loop_ancestor().map(|p| p.display().to_string()).unwrap_or_default()
                ))
            }
            // An unreadable folder or a dangling link: not a match (as the shell's glob).
            Err(_) => continue,
        };
        let p = entry.path();
        if entry.file_type().is_file() && !is_hidden(p) && matcher.matches_path_with(p, options) {
            files.push(p.to_path_buf());
        }
    }
    Ok(files)
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(paths: &[&str]) -> Vec<Location> {
        paths
            .iter()
            .map(|p| Location::Local(PathBuf::from(p)))
            .collect()
    }

    #[test]
    fn hive_folders_become_partition_values_when_every_file_has_the_same_keys() {
        let root = Path::new("/p");
        let files = local(&[
            "/p/data/year=2024/month=01/a.csv",
            "/p/data/year=2024/month=__HIVE_DEFAULT_PARTITION__/b.csv",
            "/p/data/year=2025/month=a%2Fb/c.csv",
        ]);
        let v = hive_partitions(root, &files);
        assert_eq!(
            v[0],
            [
                ("year".into(), Some("2024".into())),
                ("month".into(), Some("01".into()))
            ]
        );
        assert_eq!(v[1][1], ("month".into(), None));
        assert_eq!(v[2][1], ("month".into(), Some("a/b".into())));
        // A file without the same folders: no partition columns at all.
        let mixed = local(&["/p/data/year=2024/a.csv", "/p/data/b.csv"]);
        assert!(hive_partitions(root, &mixed).iter().all(Vec::is_empty));
        // A file name with `=` is not a folder; a project root named `k=v` is not either.
        let v = hive_partitions(Path::new("/env=prod"), &local(&["/env=prod/x=1.csv"]));
        assert!(v[0].is_empty());
    }
}
