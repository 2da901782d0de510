//! The kernel layer of the memory cap: a cgroup v2 `memory.max` for the worker, used only when
//! the gateway's own cgroup is delegated to it and writable (e.g. systemd `Delegate=yes`).
//! Never required: anywhere else (cgroup v1 hosts, containers, plain shells) this reports why
//! it is unavailable and the other layers (worker budget, RSS watch, systemd's `MemoryMax=`) act.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// A leaf cgroup holding the worker, with its `memory.max` set.
#[derive(Debug, Clone)]
pub struct WorkerCgroup {
    pub path: PathBuf,
}

/// Tries to create `<our cgroup>/worker` with `memory.max = cap`. The gateway moves itself into
/// a sibling leaf first (cgroup v2 forbids processes in a cgroup that delegates controllers).
pub fn setup(cap: u64) -> Result<WorkerCgroup, String> {
    let base = crate::host::own_cgroup()?;
    let controllers = fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(format!("memory controller not available in {}", base.display()));
    }
    let write = |path: &Path, value: &str| {
        fs::write(path, value).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    let gateway_leaf = base.join("gateway");
    let worker_leaf = base.join("worker");
    for leaf in [&gateway_leaf, &worker_leaf] {
        if let Err(e) = fs::create_dir(leaf) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(format!("creating {}: {e} (cgroup not delegated)", leaf.display()));
            }
        }
    }
    write(&gateway_leaf.join("cgroup.procs"), &std::process::id().to_string())?;
    write(&base.join("cgroup.subtree_control"), "+memory")?;
    write(&worker_leaf.join("memory.max"), &cap.to_string())?;
    let _ = fs::write(worker_leaf.join("memory.swap.max"), "0");
    Ok(WorkerCgroup { path: worker_leaf })
}

impl WorkerCgroup {
    /// Moves `pid` into the worker cgroup.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("moving worker {pid} into {}: {e}", self.path.display()))
    }

    /// The kernel's count of OOM kills in this cgroup; a rise means the kernel layer acted.
    pub fn oom_kills(&self) -> u64 {
        let events = fs::read_to_string(self.path.join("memory.events")).unwrap_or_default();
        events
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}
