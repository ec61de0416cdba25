//! Discovery: which files the scrape jobs' globs match, now and as directories change.
//!
//! [`Targets`] compiles each static config's `__path__` and `__path_exclude__` into glob
//! patterns and answers two questions: which files match right now ([`Targets::scan`]), and
//! which directories must be watched so that a new match is noticed at once
//! ([`Targets::watch_roots`]). The [`watch`] module turns those into one inotify watcher, and
//! [`stamps`] tells whether matching again could find anything new.

pub mod meta;
pub mod stamps;
pub mod watch;

pub use stamps::DirStamps;

use crate::config::{Config, PATH_EXCLUDE_LABEL, PATH_LABEL, expand_braces};
use crate::labels::LabelSet;
use crate::relabel;
use foldhash::{HashSet, HashSetExt};
use glob::{MatchOptions, Pattern};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// `*` does not cross `/`, and dotfiles match like any other file, as in Promtail.
const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// One static config of one job: the files it covers and the labels they get.
#[derive(Debug)]
pub struct Target {
    pub job: String,
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
    labels: BTreeMap<String, String>,
    /// The static config's labels as written, `__` ones included: what relabeling starts from.
    all_labels: BTreeMap<String, String>,
    relabel: Arc<Vec<relabel::RelabelConfig>>,
    /// `__path__` and `__path_exclude__` as written.
    path: String,
    exclude_text: Option<String>,
}

impl Target {
    /// Whether `path` is one of this target's files (by name; the file may not exist).
    pub fn matches(&self, path: &Path) -> bool {
        self.include
            .iter()
            .any(|p| p.matches_path_with(path, MATCH))
            && !self
                .exclude
                .iter()
                .any(|p| p.matches_path_with(path, MATCH))
    }

    /// The labels of the stream read from `path`: the target's labels and `filename`.
    pub fn labels_for(&self, path: &Path) -> Arc<LabelSet> {
        let filename = path.to_string_lossy().into_owned();
        Arc::new(LabelSet::new(
            self.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain([("filename".to_string(), filename)]),
        ))
    }

    /// The labels of the stream read from `path` after `relabel_configs`, which see the
    /// target's labels (`__path__` among them) and the file's meta labels (container
    /// metadata, see [`meta`]); None when a rule drops the file. `filename` is added after
    /// relabeling, as Promtail does.
    pub fn relabeled_labels_for(
        &self,
        path: &Path,
        cache: &mut meta::MetaCache,
    ) -> Option<Arc<LabelSet>> {
        if self.relabel.is_empty() {
            return Some(self.labels_for(path));
        }
        let mut start = self.all_labels.clone();
        start.extend(cache.labels(path));
        let relabeled = relabel::relabel(&start, &self.relabel)?;
        let filename = path.to_string_lossy().into_owned();
        Some(Arc::new(LabelSet::new(
            relabeled
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .chain([("filename".to_string(), filename)]),
        )))
    }

    /// Whether the file's labels can depend on metadata that changed since it was read.
    pub fn meta_changed(&self, path: &Path, cache: &meta::MetaCache) -> bool {
        !self.relabel.is_empty() && cache.changed(path)
    }
}

/// What one match of the globs found.
#[derive(Debug)]
pub struct Scan {
    /// Each matched regular file, its target and its metadata.
    pub files: Vec<(PathBuf, usize, std::fs::Metadata)>,
    /// The directories the match depended on.
    pub dirs: DirStamps,
}

/// A directory to watch, recursively or not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchRoot {
    pub dir: PathBuf,
    pub recursive: bool,
}

/// All targets of all jobs.
#[derive(Debug, Default)]
pub struct Targets {
    targets: Vec<Target>,
}

impl Targets {
    /// The file targets of a config: each static config with a `__path__`.
    pub fn from_config(config: &Config) -> Targets {
        let mut targets = vec![];
        for job in &config.scrape_configs {
            for sc in &job.static_configs {
                let labels = &sc.labels.0;
                let Some(path) = labels.get(PATH_LABEL) else {
                    tracing::warn!(job = %job.job_name, "static config without __path__ reads no file");
                    continue;
                };
                let compile = |value: Option<&String>| -> Vec<Pattern> {
                    value
                        .and_then(|v| expand_braces(v).ok())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|p| Pattern::new(p).ok())
                        .collect()
                };
                // Only `labels:` become labels; Promtail does not add `job` from `job_name`.
                // Relabeling also sees `__address__`, the target (the first: a file is read
                // once, see `find`).
                let mut all_labels = labels.clone();
                if let Some(address) = sc.targets.first() {
                    all_labels.insert("__address__".to_string(), address.clone());
                }
                let mut all = labels.clone();
                all.retain(|name, _| !name.starts_with("__"));
                targets.push(Target {
                    job: job.job_name.clone(),
                    include: compile(Some(path)),
                    exclude: compile(labels.get(PATH_EXCLUDE_LABEL)),
                    labels: all,
                    all_labels,
                    relabel: Arc::new(job.relabel_configs.clone()),
                    path: path.clone(),
                    exclude_text: labels.get(PATH_EXCLUDE_LABEL).cloned(),
                });
            }
        }
        Targets { targets }
    }

    /// The targets as configured, for the status page.
    pub fn describe(&self) -> Vec<crate::status::TargetInfo> {
        self.targets
            .iter()
            .map(|t| crate::status::TargetInfo {
                job: t.job.clone(),
                labels: t.labels.clone(),
                path: t.path.clone(),
                exclude: t.exclude_text.clone(),
            })
            .collect()
    }

    pub fn get(&self, index: usize) -> Option<&Target> {
        self.targets.get(index)
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The first target `path` belongs to. A file matched by several targets is read once,
    /// for the first (in config order).
    pub fn find(&self, path: &Path) -> Option<usize> {
        self.targets.iter().position(|t| t.matches(path))
    }

    /// Every regular file the globs match now, with its target and what `stat` said of it
    /// (so that callers need not look again), each path once; and the directories the match
    /// depended on, stamped before it was made.
    pub fn scan(&self) -> Scan {
        let dirs = DirStamps::take(self.scanned_dirs());
        // A glob without `**` yields each path once; several globs, or a `**` that reaches a
        // directory by two ways, can yield one twice.
        let patterns: Vec<&str> = self
            .targets
            .iter()
            .flat_map(|t| t.include.iter().map(|p| p.as_str()))
            .collect();
        let dedupe = patterns.len() > 1 || patterns.iter().any(|p| p.contains("**"));
        let mut seen = HashSet::new();
        let mut found = vec![];
        for (index, target) in self.targets.iter().enumerate() {
            for pattern in &target.include {
                let Ok(paths) = glob::glob_with(pattern.as_str(), MATCH) else {
                    continue;
                };
                for path in paths.flatten() {
                    if target
                        .exclude
                        .iter()
                        .any(|p| p.matches_path_with(&path, MATCH))
                    {
                        continue;
                    }
                    // Directories and devices are skipped; a symlink counts as what it points to.
                    let Ok(meta) = std::fs::metadata(&path) else {
                        continue;
                    };
                    if meta.is_file() && (!dedupe || seen.insert(path.clone())) {
                        found.push((path, index, meta));
                    }
                }
            }
        }
        Scan { files: found, dirs }
    }

    /// The directories whose entries decide what the globs match: for each glob, the directory
    /// before its first wildcard and every directory matching a longer prefix of it (those the
    /// walk lists or looks into). For a path without wildcards, its directory.
    fn scanned_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![];
        for pattern in self.targets.iter().flat_map(|t| t.include.iter()) {
            let components: Vec<Component> = Path::new(pattern.as_str()).components().collect();
            let wild = first_wildcard(&components);
            let fixed = wild.unwrap_or(components.len().saturating_sub(1));
            let mut base: PathBuf = components[..fixed].iter().collect();
            if base.as_os_str().is_empty() {
                base = PathBuf::from(".");
            }
            dirs.push(base);
            // Prefixes ending before the last component, from the first wildcard on.
            for end in (fixed + 1)..components.len() {
                let prefix: PathBuf = components[..end].iter().collect();
                let Ok(found) = glob::glob_with(&prefix.to_string_lossy(), MATCH) else {
                    continue;
                };
                dirs.extend(found.flatten().filter(|p| p.is_dir()));
            }
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// The directories whose changes can make a new match: for each glob, the directory
    /// before its first wildcard (recursively when the wildcard is not in the last part); a
    /// directory that does not exist yet is watched through its nearest existing parent.
    pub fn watch_roots(&self) -> Vec<WatchRoot> {
        let mut roots: Vec<WatchRoot> = self
            .targets
            .iter()
            .flat_map(|t| t.include.iter())
            .map(|p| watch_root(Path::new(p.as_str())))
            .collect();
        roots.sort();
        roots.dedup();
        roots
    }
}

/// The index of the first path component with a glob wildcard.
fn first_wildcard(components: &[Component]) -> Option<usize> {
    components
        .iter()
        .position(|c| c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
}

fn watch_root(pattern: &Path) -> WatchRoot {
    let components: Vec<Component> = pattern.components().collect();
    let wild = first_wildcard(&components);
    let (static_len, recursive) = match wild {
        Some(i) => (i, i + 1 < components.len()),
        None => (components.len().saturating_sub(1), false),
    };
    let mut dir: PathBuf = components[..static_len].iter().collect();
    if dir.as_os_str().is_empty() {
        dir = PathBuf::from(".");
    }
    if dir.is_dir() {
        return WatchRoot { dir, recursive };
    }
    // Not there yet: watch the nearest parent that is, and look again when it gains a directory.
    let mut parent = dir.as_path();
    while let Some(p) = parent.parent() {
        if p.as_os_str().is_empty() {
            break;
        }
        if p.is_dir() {
            return WatchRoot {
                dir: p.to_path_buf(),
                recursive: false,
            };
        }
        parent = p;
    }
    WatchRoot {
        dir: PathBuf::from("/"),
        recursive: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check_glob;

    fn targets(yaml: &str) -> Targets {
        Targets::from_config(&Config::parse(yaml, "test").unwrap())
    }

    #[test]
    fn braces_expand() {
        assert_eq!(
            expand_braces("/a/{x,y}/*.{log,txt}").unwrap(),
            vec!["/a/x/*.log", "/a/x/*.txt", "/a/y/*.log", "/a/y/*.txt"]
        );
        assert!(check_glob("/a/{x").is_err());
        assert!(check_glob("/a/[").is_err());
        assert!(check_glob("/var/log/**/*.log").is_ok());
    }

    #[test]
    fn scan_matches_includes_minus_excludes_and_skips_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::create_dir(d.join("dir.log")).unwrap();
        for f in [
            "a.log",
            "b.log",
            "old.log.gz",
            "sub/c.log",
            "sub/deeper/d.log",
            ".hidden.log",
        ] {
            std::fs::write(d.join(f), "x\n").unwrap();
        }
        let t = targets(&format!(
            "scrape_configs:\n- job_name: j\n  static_configs:\n  - labels: {{__path__: '{0}/**/*.log*', __path_exclude__: '{0}/*.gz'}}\n",
            d.display()
        ));
        let mut found: Vec<String> = t
            .scan()
            .files
            .into_iter()
            .map(|(p, _, _)| p.strip_prefix(d).unwrap().display().to_string())
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                ".hidden.log",
                "a.log",
                "b.log",
                "sub/c.log",
                "sub/deeper/d.log"
            ]
        );
    }

    #[test]
    fn a_scan_depends_on_every_directory_its_globs_look_into() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["pods/a/app", "pods/b/app", "pods/c/other", "flat"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("pods/a/app/0.log"), "x\n").unwrap();
        let t = targets(&format!(
            "scrape_configs:\n- job_name: j\n  static_configs:\n  - labels: {{__path__: '{0}/pods/*/*/*.log'}}\n  - labels: {{__path__: '{0}/flat/one.log'}}\n",
            d.display()
        ));
        let mut dirs: Vec<String> = t
            .scanned_dirs()
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().display().to_string())
            .collect();
        dirs.sort();
        assert_eq!(
            dirs,
            vec![
                "flat",
                "pods",
                "pods/a",
                "pods/a/app",
                "pods/b",
                "pods/b/app",
                "pods/c",
                "pods/c/other"
            ]
        );
    }

    #[test]
    fn star_does_not_cross_directories() {
        let t = targets(
            "scrape_configs:\n- job_name: j\n  static_configs:\n  - labels: {__path__: /var/log/*log}\n",
        );
        assert_eq!(t.find(Path::new("/var/log/syslog")), Some(0));
        assert_eq!(t.find(Path::new("/var/log/nginx/access.log")), None);
    }

    #[test]
    fn labels_drop_internal_names_and_add_filename() {
        let t = targets(
            "scrape_configs:\n- job_name: sys\n  static_configs:\n  - labels: {__path__: /x/*.log, host: h}\n",
        );
        let labels = t.get(0).unwrap().labels_for(Path::new("/x/a.log"));
        assert_eq!(labels.rendered(), r#"{filename="/x/a.log", host="h"}"#);
    }

    #[test]
    fn watch_roots_stop_at_the_first_wildcard() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let root = |p: &str| watch_root(&d.join(p));
        assert_eq!(
            root("*.log"),
            WatchRoot {
                dir: d.to_path_buf(),
                recursive: false
            }
        );
        assert_eq!(
            root("*/x/*.log"),
            WatchRoot {
                dir: d.to_path_buf(),
                recursive: true
            }
        );
        assert_eq!(
            root("**/*.log"),
            WatchRoot {
                dir: d.to_path_buf(),
                recursive: true
            }
        );
        assert_eq!(
            root("missing/later/*.log"),
            WatchRoot {
                dir: d.to_path_buf(),
                recursive: false
            }
        );
        assert_eq!(
            root("plain.log"),
            WatchRoot {
                dir: d.to_path_buf(),
                recursive: false
            }
        );
    }
}
