//! Where things are (the OpenClaw state dir we read, clawgate's own data dir, the worker binary)
//! and how settings are written: one parser each for sizes, durations and listen addresses,
//! used by every flag and environment variable, so `512` never means bytes in one place and
//! mebibytes in another.
//!
//! Conventions (docs/ops/configuration.md): a size needs a unit, `B`, `KiB`, `MiB`, `GiB`,
//! `TiB` or systemd's `K`, `M`, `G`, `T` (also 1024-based, as in `MemoryMax=512M`), e.g.
//! `512MiB`, `1.5G`; decimal `KB`/`MB`/`GB` are refused as ambiguous. A duration needs a unit
//! too (humantime: `500ms`, `10s`, `5m`, `1h 30m`); only `0` may stand alone.

use std::{
    fmt,
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
    str::FromStr,
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
    /// Shield mode: the OpenClaw gateway to relay to (`--upstream`, see `relay`).
    pub upstream: Option<crate::relay::Upstream>,
    /// How the worker is run and watched (mode, binary, memory cap, restart policy). The
    /// supervisor adds `--state-dir` itself.
    pub worker: supervisor::Config,
    /// How long one API call may wait for the worker before it is answered `UNAVAILABLE`.
    pub request_timeout: Duration,
    /// API tuning: job queue, refresher, WebSocket tick (see `cache.rs` and `ws.rs`).
    pub api: ApiTuning,
    /// Cost budgets (`--budget`, `--budget-tz`); empty: none.
    pub budgets: crate::budget::BudgetConfig,
    /// How often the state dir's agents are listed (`agents`).
    pub state_check_interval: Duration,
    /// The runtime for bulk I/O: WebSocket connections and the supervisor, which reads the
    /// worker's answers (`None`: the one `serve` runs on). Reading an 8 MB answer off the worker
    /// socket or sending it to 20 dashboards keeps a thread busy for milliseconds at a time; on
    /// their own threads this never delays `/healthz` and small HTTP calls, whose runtime stays
    /// idle enough for the kernel to run it the moment a request arrives.
    pub bulk_runtime: Option<tokio::runtime::Handle>,
}

/// The default of the hidden `--state-check-interval`: how soon a state dir that gains or loses
/// its agents is noticed.
pub const DEFAULT_STATE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The default of `--request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Knobs of the request path; `Default` is what `serve` uses without flags, and the flags'
/// `--help` shows these values.
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

/// OpenClaw's state directory: see [`supervisor::host::default_state_dir`], the one
/// implementation.
pub use supervisor::host::default_state_dir;

/// `$XDG_STATE_HOME/clawgate`, else `~/.local/state/clawgate`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("clawgate");
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map_or_else(|| PathBuf::from("/"), PathBuf::from)
        .join(".local/state/clawgate")
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

/// A byte size written with a unit (see the module doc). Displays in the largest binary unit
/// that divides it exactly, so `--help` shows `512MiB`, not `536870912`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

const SIZE_UNITS: [(&str, &str, u32); 5] =
    [("b", "B", 0), ("k", "KiB", 10), ("m", "MiB", 20), ("g", "GiB", 30), ("t", "TiB", 40)];

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Size, String> {
        let text = text.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit = unit.trim();
        if unit.is_empty() {
            return Err(format!(
                "\"{text}\" needs a unit, e.g. {text}MiB (B, KiB, MiB, GiB; or K, M, G as in systemd)"
            ));
        }
        let value: f64 = number.parse().map_err(|_| format!("not a size: \"{text}\" (e.g. 512MiB)"))?;
        let lower = unit.to_ascii_lowercase();
        let shift = SIZE_UNITS.iter().find_map(|(short, long, shift)| {
            (lower == *short || lower == long.to_ascii_lowercase()).then_some(*shift)
        });
        let Some(shift) = shift else {
            if matches!(lower.as_str(), "kb" | "mb" | "gb" | "tb") {
                return Err(format!(
                    "\"{text}\": decimal units are ambiguous here; write {}{}iB (1024-based) or the number of bytes with B",
                    number,
                    &unit[..1].to_ascii_uppercase()
                ));
            }
            return Err(format!("unknown size unit \"{unit}\" in \"{text}\" (use B, KiB, MiB, GiB or TiB)"));
        };
        let bytes = value * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("size out of range: \"{text}\""));
        }
        if bytes < 1.0 {
            return Err(format!("size must be positive: \"{text}\""));
        }
        Ok(Size(bytes as u64))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (_, unit, shift) = SIZE_UNITS
            .iter()
            .rev()
            .find(|(_, _, shift)| self.0 >> shift << shift == self.0 && self.0 >> shift > 0)
            .unwrap_or(&SIZE_UNITS[0]);
        write!(f, "{}{unit}", self.0 >> shift)
    }
}

/// A duration written with a unit (humantime: `500ms`, `10s`, `5m`, `1h 30m`; `0` alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;

    fn from_str(text: &str) -> Result<Dur, String> {
        let text = text.trim();
        if text != "0" && !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!("\"{text}\" needs a unit, e.g. {text}s or {text}ms"));
        }
        humantime::parse_duration(text)
            .map(Dur)
            .map_err(|e| format!("not a duration: \"{text}\" ({e}; e.g. 10s, 500ms, 5m)"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        humantime::format_duration(self.0).fmt(f)
    }
}

/// Parses a positive duration (for timeouts and intervals where zero makes no sense).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let Dur(d) = text.parse()?;
    if d.is_zero() {
        return Err(format!("\"{text}\" must be more than zero"));
    }
    Ok(d)
}

/// A listen address: `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT` with a name resolved now
/// (`localhost:18790`). Of the addresses a name resolves to, IPv4 is preferred: `localhost`
/// then means 127.0.0.1, the address clients and `clawgate status` try by default.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':').filter(|(host, _)| !host.is_empty()) else {
        return Err(format!("\"{text}\" is not HOST:PORT (e.g. 127.0.0.1:18790 or localhost:18790)"));
    };
    let port: u16 = port.parse().map_err(|_| format!("\"{port}\" in \"{text}\" is not a port number"))?;
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve \"{host}\": {e}"))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("\"{host}\" resolves to no address"))
}

/// Checks `--worker-memory-max` against the documented floor (unless `allow_small`, for fault
/// drills and tests that want a worker killed quickly).
pub fn check_worker_memory_max(cap: Size, allow_small: bool) -> Result<u64, String> {
    let floor = Size(supervisor::defaults::MIN_MEMORY_MAX);
    if cap < floor && !allow_small {
        return Err(format!(
            "--worker-memory-max {cap} is below the minimum of {floor}: the worker could not hold an ordinary store's \
             rollups and would be killed over and over (see docs/ops/memory.md)"
        ));
    }
    Ok(cap.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(text: &str) -> Result<u64, String> {
        text.parse::<Size>().map(|s| s.0)
    }

    #[test]
    fn sizes_need_a_binary_unit() {
        assert_eq!(size("512MiB"), Ok(512 << 20));
        assert_eq!(size("512M"), Ok(512 << 20), "systemd's M is 1024-based");
        assert_eq!(size("1G"), Ok(1 << 30));
        assert_eq!(size("1.5k"), Ok(1536));
        assert_eq!(size("4096B"), Ok(4096));
        assert_eq!(size(" 2 gib "), Ok(2 << 30));
        let bare = size("512").unwrap_err();
        assert!(bare.contains("needs a unit"), "{bare}");
        let decimal = size("16MB").unwrap_err();
        assert!(decimal.contains("ambiguous") && decimal.contains("16MiB"), "{decimal}");
        assert!(size("12 parsecs").is_err());
        assert!(size("0MiB").is_err());
        assert!(size("99999999999TiB").is_err());
        assert!(size("MiB").is_err());
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        assert_eq!(Size(512 << 20).to_string(), "512MiB");
        assert_eq!(Size(16 << 20).to_string(), "16MiB");
        assert_eq!(Size(1 << 30).to_string(), "1GiB");
        assert_eq!(Size(1536).to_string(), "1536B");
        assert_eq!(Size(3 << 10).to_string(), "3KiB");
        assert_eq!(Size(1000).to_string(), "1000B");
        for s in [Size(512 << 20), Size(3 << 10), Size(12345)] {
            assert_eq!(s.to_string().parse::<Size>(), Ok(s), "round trip of {s}");
        }
    }

    #[test]
    fn the_worker_memory_floor_is_enforced() {
        assert_eq!(check_worker_memory_max(Size(256 << 20), false), Ok(256 << 20));
        let err = check_worker_memory_max(Size(1 << 10), false).unwrap_err();
        assert!(err.contains("1KiB") && err.contains("256MiB"), "{err}");
        assert_eq!(check_worker_memory_max(Size(64 << 20), true), Ok(64 << 20));
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!("5s".parse(), Ok(Dur(Duration::from_secs(5))));
        assert_eq!("250ms".parse(), Ok(Dur(Duration::from_millis(250))));
        assert_eq!("1.5s".parse(), Ok(Dur(Duration::from_millis(1500))));
        assert_eq!("1m 30s".parse(), Ok(Dur(Duration::from_secs(90))));
        assert_eq!("0".parse(), Ok(Dur(Duration::ZERO)));
        let bare = "10".parse::<Dur>().unwrap_err();
        assert!(bare.contains("needs a unit") && bare.contains("10s"), "{bare}");
        assert!("5 fortnights".parse::<Dur>().is_err());
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(Dur(Duration::from_secs(300)).to_string(), "5m");
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1s 500ms");
        assert_eq!(Dur(Duration::ZERO).to_string(), "0s");
        for d in ["5m", "1s 500ms", "0s", "250ms"] {
            assert_eq!(d.parse::<Dur>().map(|d| d.to_string()).as_deref(), Ok(d));
        }
    }

    #[test]
    fn listen_addresses_accept_names() {
        assert_eq!(parse_listen("127.0.0.1:18790"), Ok("127.0.0.1:18790".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:0"), Ok("[::1]:0".parse().unwrap()));
        let local = parse_listen("localhost:18790").expect("localhost resolves");
        assert!(local.ip().is_loopback() && local.port() == 18790, "{local}");
        assert!(parse_listen("localhost").is_err());
        assert!(parse_listen("localhost:http").is_err());
        assert!(parse_listen(":18790").is_err());
    }
}
