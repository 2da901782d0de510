//! Where things are: the OpenClaw state dir we read, clawgate's own data dir, the worker binary.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// OpenClaw's state directory (read only).
    pub state_dir: PathBuf,
    /// clawgate's own files: demo store, socket dir, caches.
    pub data_dir: PathBuf,
    /// Private directory for the worker socket.
    pub run_dir: PathBuf,
    pub token: Option<String>,
    pub worker_bin: PathBuf,
    /// How long one API call may wait for the worker before it is answered `UNAVAILABLE`.
    pub request_timeout: Duration,
}

/// The default listen address: loopback, next to OpenClaw's 18789.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:18790";

/// `$OPENCLAW_STATE_DIR`, else `~/.openclaw` (with `OPENCLAW_HOME` replacing `$HOME`).
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OPENCLAW_STATE_DIR").filter(|d| !d.is_empty()) {
        return expand_tilde(Path::new(&dir));
    }
    home_dir(&["OPENCLAW_HOME", "HOME"]).join(".openclaw")
}

/// `$XDG_STATE_HOME/clawgate`, else `~/.local/state/clawgate`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("clawgate");
    }
    home_dir(&["HOME"]).join(".local/state/clawgate")
}

/// The worker binary: `$CLAWGATE_WORKER_BIN`, else `clawgate-usage-worker` beside this executable.
pub fn default_worker_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CLAWGATE_WORKER_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("clawgate-usage-worker")))
        .unwrap_or_else(|| PathBuf::from("clawgate-usage-worker"))
}

fn home_dir(vars: &[&str]) -> PathBuf {
    vars.iter()
        .find_map(|v| std::env::var_os(v).filter(|h| !h.is_empty()))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn expand_tilde(path: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home_dir(&["OPENCLAW_HOME", "HOME"]).join(rest),
        Err(_) => path.to_path_buf(),
    }
}
