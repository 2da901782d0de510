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
    /// Public names (`name` or `name:port`) accepted in `Host` and `Origin` besides loopback
    /// names and IP addresses (see `auth::host`).
    pub allowed_hosts: Vec<String>,
    /// Most client connections at once; `None`: derived from the open-file limit (`conns`).
    pub max_connections: Option<usize>,
    /// How the worker is run and watched (mode, binary, memory cap, restart policy). The
    /// supervisor adds `--state-dir` itself.
    pub worker: supervisor::Config,
    /// How long one API call may wait for the worker before it is answered `UNAVAILABLE`.
    pub request_timeout: Duration,
    /// API tuning: job queue, refresher, WebSocket tick (see `cache.rs` and `ws.rs`).
    pub api: ApiTuning,
    /// The runtime for bulk I/O: WebSocket connections and the supervisor, which reads the
    /// worker's answers (`None`: the one `serve` runs on). Reading an 8 MB answer off the worker
    /// socket or sending it to 20 dashboards keeps a thread busy for milliseconds at a time; on
    /// their own threads this never delays `/healthz` and small HTTP calls, whose runtime stays
    /// idle enough for the kernel to run it the moment a request arrives.
    pub bulk_runtime: Option<tokio::runtime::Handle>,
}

/// Knobs of the request path; `Default` is what `serve` uses without flags.
#[derive(Debug, Clone)]
pub struct ApiTuning {
    /// Distinct usage jobs running or queued at once; a request needing one more is answered
    /// at once (stale, or `UNAVAILABLE`/429).
    pub max_queued_jobs: usize,
    /// Most answer bytes the cache keeps between calls. It bounds the gateway's memory: an
    /// 8 MB `sessions.usage` answer per dashboard query is the usual size, and a refused entry
    /// only costs a worker job, which every call runs anyway (answers are exact, never aged).
    pub cache_max_bytes: usize,
    /// How often recently requested usage queries are re-run while WebSocket clients are
    /// connected, to push `usage.updated` (zero: never).
    pub refresh_interval: Duration,
    /// The WebSocket `tick` event interval (`policy.tickIntervalMs`).
    pub tick_interval: Duration,
    /// Longest wait for a request head (also between requests on a keep-alive connection):
    /// a client that connects and never finishes a request must not hold a socket for good.
    pub header_read_timeout: Duration,
    /// A WebSocket client that takes none of the bytes queued for it (answers, pongs) for this
    /// long is disconnected rather than buffered for.
    pub ws_send_timeout: Duration,
}

impl Default for ApiTuning {
    fn default() -> ApiTuning {
        ApiTuning {
            max_queued_jobs: 16,
            cache_max_bytes: 16 << 20,
            refresh_interval: Duration::from_secs(15),
            tick_interval: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(60),
            ws_send_timeout: Duration::from_secs(30),
        }
    }
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

/// Parses a byte size: `536870912`, `512MiB`, `512M`, `1GiB`, `1.5G` (binary units).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("not a size: \"{text}\" (e.g. 512MiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit \"{other}\" (use B, KiB, MiB or GiB)")),
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("size must be positive: \"{text}\""));
    }
    Ok(bytes as u64)
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

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1.5k"), Ok(1536));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("0").is_err());
    }
}
