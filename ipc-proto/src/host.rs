//! Facts about the host that both processes need, worked out in one place: where OpenClaw keeps
//! its state, which cgroup v2 this process is in, and the heap budget under a memory cap.
//!
//! They live here because ipc-proto is the one crate the gateway (with its supervisor) and the
//! worker both link: a worker run as its own unit must resolve the same state directory and the
//! same budget as a supervised one is handed on its command line.

use std::path::{Path, PathBuf};

/// OpenClaw's state directory as OpenClaw resolves it: `$OPENCLAW_STATE_DIR` (a leading `~`
/// expanded), else `~/.openclaw`, with `$OPENCLAW_HOME` standing in for `$HOME` when set.
pub fn default_state_dir() -> PathBuf {
    state_dir_from(|name| std::env::var_os(name))
}

fn state_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let home = || {
        ["OPENCLAW_HOME", "HOME"]
            .iter()
            .find_map(|name| var(name).filter(|h| !h.is_empty()))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"))
    };
    match var("OPENCLAW_STATE_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => match Path::new(&dir).strip_prefix("~") {
            Ok(rest) => home().join(rest),
            Err(_) => PathBuf::from(dir),
        },
        None => home().join(".openclaw"),
    }
}

/// This process's cgroup v2 directory (e.g. `/sys/fs/cgroup/system.slice/clawgate.service`),
/// or why there is none (cgroup v1 host, no `/proc`).
pub fn own_cgroup() -> Result<PathBuf, String> {
    let mount = cgroup2_mount().ok_or("no cgroup v2 mount")?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is not in a cgroup v2 hierarchy")?;
    Ok(mount.join(rel.trim().trim_start_matches('/')))
}

/// The `memory.max` of this process's cgroup (systemd's `MemoryMax=`); `None` when unlimited
/// or unknown.
pub fn own_memory_max() -> Option<u64> {
    let max = std::fs::read_to_string(own_cgroup().ok()?.join("memory.max")).ok()?;
    max.trim().parse().ok()
}

/// The worker's heap budget under a memory cap: 80% of it, leaving the rest for what the heap
/// counter cannot see (stacks, page cache charged to the cgroup, allocator slack).
pub fn heap_budget(memory_max: u64) -> u64 {
    memory_max / 10 * 8
}

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo` (not assumed to be
/// `/sys/fs/cgroup`: containers and older distributions differ).
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).into())
    }

    #[test]
    fn state_dir_follows_openclaw() {
        assert_eq!(state_dir_from(vars(&[("HOME", "/home/a")])), Path::new("/home/a/.openclaw"));
        assert_eq!(
            state_dir_from(vars(&[("HOME", "/home/a"), ("OPENCLAW_HOME", "/srv/oc")])),
            Path::new("/srv/oc/.openclaw")
        );
        assert_eq!(
            state_dir_from(vars(&[("HOME", "/home/a"), ("OPENCLAW_STATE_DIR", "~/state")])),
            Path::new("/home/a/state")
        );
        assert_eq!(
            state_dir_from(vars(&[("HOME", "/home/a"), ("OPENCLAW_STATE_DIR", "/var/oc")])),
            Path::new("/var/oc")
        );
        assert_eq!(
            state_dir_from(vars(&[("OPENCLAW_STATE_DIR", ""), ("HOME", "")])),
            Path::new("/.openclaw")
        );
    }

    #[test]
    fn own_cgroup_is_under_the_mount_when_there_is_one() {
        if let Ok(dir) = own_cgroup() {
            assert!(dir.is_absolute(), "{}", dir.display());
            assert!(dir.join("cgroup.procs").exists(), "{} is not a cgroup", dir.display());
        }
    }
}
