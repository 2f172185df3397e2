//! The memory this process may use: its cgroup's limit, read once at start-up.
//!
//! Why: past that limit the kernel OOM-kills the proxy, which resets every module connection at
//! once (every call in flight uninspected). The proxy's own connection and byte limits must trip
//! first, so `memory_budget.rs` derives their defaults from this limit and refuses explicit
//! settings that do not fit in it.
//!
//! cgroup v2: `memory.max` of the process's cgroup (the `0::PATH` line of `/proc/self/cgroup`)
//! and of each of its ancestors up to the mount; the smallest binds. cgroup v1 (no v2 memory
//! controller): `memory.limit_in_bytes` the same way under the `memory` hierarchy. Inside a
//! container the cgroup path may name the host's hierarchy while the mount shows the
//! container's own cgroup at its root: the walk up ends at the mount's root, whose file is the
//! container's. `max` (v2) and v1's "unlimited" (a value near `i64::MAX`) mean no limit.

use std::path::Path;

/// Where the cgroup file systems are mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// Any v1 limit at or above this is v1's way of writing "unlimited" (`i64::MAX` rounded down
/// to a page; no machine has 4 EiB).
const UNLIMITED_V1: u64 = 1 << 62;

/// What the limit files of one hierarchy say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    /// No limit file: this hierarchy has no memory controller here.
    Nothing,
    /// Files, all unlimited.
    Unlimited,
    /// The smallest limit, in bytes.
    Bytes(u64),
}

/// The memory limit of this process in bytes; `None` when unlimited or unreadable.
pub fn memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    limit_under(Path::new(ROOT), &own)
}

/// The limit from the cgroup files below `root`, for a process whose `/proc/self/cgroup` reads
/// `own`: v2 first, v1 when v2 has no memory controller.
fn limit_under(root: &Path, own: &str) -> Option<u64> {
    let (v2, v1) = own_cgroups(own);
    let found = v2.map_or(Found::Nothing, |path| smallest(root, path, "memory.max"));
    let found = match (found, v1) {
        (Found::Nothing, Some(path)) => {
            smallest(&root.join("memory"), path, "memory.limit_in_bytes")
        }
        (found, _) => found,
    };
    match found {
        Found::Bytes(bytes) => Some(bytes),
        Found::Nothing | Found::Unlimited => None,
    }
}

/// The process's v2 cgroup path and its v1 memory cgroup path, from `/proc/self/cgroup`
/// (`ID:CONTROLLERS:PATH` lines; v2's is `0::PATH`).
fn own_cgroups(own: &str) -> (Option<&str>, Option<&str>) {
    let (mut v2, mut v1) = (None, None);
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path);
        }
    }
    (v2, v1)
}

/// The smallest limit in `file` of the cgroup at `path` below `mount` and of its ancestors.
fn smallest(mount: &Path, path: &str, file: &str) -> Found {
    let mut found = Found::Nothing;
    let mut dir = mount.join(path.trim_start_matches('/'));
    loop {
        if let Some(limit) = std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| parse_limit(&text))
        {
            found = match (found, limit) {
                (Found::Bytes(a), Some(b)) => Found::Bytes(a.min(b)),
                (Found::Bytes(a), None) => Found::Bytes(a),
                (_, Some(b)) => Found::Bytes(b),
                (_, None) => Found::Unlimited,
            };
        }
        if dir == mount || !dir.pop() || !dir.starts_with(mount) {
            return found;
        }
    }
}

/// One limit file's content: `Some(None)` unlimited, `Some(Some(bytes))`, `None` unreadable.
fn parse_limit(text: &str) -> Option<Option<u64>> {
    let text = text.trim();
    if text == "max" {
        return Some(None);
    }
    let bytes: u64 = text.parse().ok()?;
    Some((bytes < UNLIMITED_V1).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write(root: &Path, dir: &str, file: &str, text: &str) {
        let dir = root.join(dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn limit_files_parse() {
        assert_eq!(parse_limit("268435456\n"), Some(Some(256 << 20)));
        assert_eq!(parse_limit("max\n"), Some(None));
        assert_eq!(parse_limit("9223372036854771712\n"), Some(None)); // v1's unlimited
        assert_eq!(parse_limit(""), None);
        assert_eq!(parse_limit("lots"), None);
    }

    #[test]
    fn proc_self_cgroup_names_the_v2_and_the_v1_memory_cgroup() {
        let hybrid = "9:name=systemd:/\n4:memory:/pods/p1\n3:cpu,cpuacct:/pods\n0::/\n";
        assert_eq!(own_cgroups(hybrid), (Some("/"), Some("/pods/p1")));
        assert_eq!(
            own_cgroups("0::/kubepods/pod1/c1\n"),
            (Some("/kubepods/pod1/c1"), None)
        );
        assert_eq!(
            own_cgroups("7:cpu,memory:/docker/abc\n"),
            (None, Some("/docker/abc"))
        );
        assert_eq!(own_cgroups("garbage\n"), (None, None));
    }

    #[test]
    fn v2_the_smallest_limit_of_the_cgroup_and_its_ancestors_binds() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        write(root, "kubepods/pod1", "memory.max", "268435456\n");
        write(root, "kubepods/pod1/c1", "memory.max", "max\n");
        write(root, "kubepods", "memory.max", "1073741824\n");
        assert_eq!(limit_under(root, "0::/kubepods/pod1/c1\n"), Some(256 << 20));
        write(root, "kubepods/pod1/c1", "memory.max", "134217728\n");
        assert_eq!(limit_under(root, "0::/kubepods/pod1/c1\n"), Some(128 << 20));
    }

    #[test]
    fn v2_max_everywhere_is_unlimited_and_ignores_v1() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        write(root, "app", "memory.max", "max\n");
        write(root, "memory/app", "memory.limit_in_bytes", "268435456\n");
        assert_eq!(limit_under(root, "4:memory:/app\n0::/app\n"), None);
    }

    #[test]
    fn a_container_namespace_reads_the_file_at_the_root() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        write(root, "", "memory.max", "268435456\n");
        assert_eq!(limit_under(root, "0::/\n"), Some(256 << 20));
        // The host's path, the container's own cgroup mounted at the root.
        assert_eq!(limit_under(root, "0::/kubepods/pod1/c1\n"), Some(256 << 20));
    }

    #[test]
    fn v1_fallback_when_v2_has_no_memory_controller() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        fs::create_dir_all(root.join("unified")).unwrap();
        write(
            root,
            "memory",
            "memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            root,
            "memory/docker/abc",
            "memory.limit_in_bytes",
            "268435456\n",
        );
        let own = "4:memory:/docker/abc\n0::/\n";
        assert_eq!(limit_under(root, own), Some(256 << 20));
        assert_eq!(limit_under(root, "4:memory:/other\n0::/\n"), None);
    }

    #[test]
    fn no_files_no_limit() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(limit_under(root.path(), "0::/x\n"), None);
        assert_eq!(limit_under(root.path(), ""), None);
    }
}
