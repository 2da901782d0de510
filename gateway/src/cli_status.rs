//! `clawgate status [--deep] [--json]`: an operator's status command that always answers.
//!
//! One total deadline bounds the whole command (default 5 s) and every probe has its own,
//! shorter one, so a stalled gateway (SIGSTOPped, or a port that accepts and never answers)
//! yields "timed out" lines and exit code 2 instead of a hang. Probes are plain blocking I/O with
//! socket timeouts: no runtime to starve, nothing that waits without a deadline.
//!
//! The gateway's answer is read into [`crate::status::Status`], the struct the gateway serves;
//! the report adds the verdict and the probes. Exit codes: 0 ok, 1 degraded (reachable, but the
//! worker is not ready or the runtime lags), 2 unreachable or failed, 3 unauthorized (the token
//! is missing or wrong). `--json` prints one [`Report`] with schema `clawgate.status/v1`
//! (documented in docs/ops/status.md).
//!
//! The token comes from `--token`, else `$CLAWGATE_TOKEN`, else the environment file the units
//! read (`~/.config/clawgate/clawgate.env`, then `/etc/clawgate/clawgate.env`), so `status` works
//! on an installed host without copying the secret around.

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    net::{TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::status::{self, Status, WorkerState};

/// The JSON schema name; bump the suffix on incompatible changes.
pub const SCHEMA: &str = "clawgate.status/v1";
/// The default total deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub const EXIT_OK: i32 = 0;
pub const EXIT_DEGRADED: i32 = 1;
pub const EXIT_UNREACHABLE: i32 = 2;
pub const EXIT_UNAUTHORIZED: i32 = 3;

/// What was given on the command line (flags and their environment variables).
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub url: Option<String>,
    pub token: Option<String>,
    pub env_file: Option<PathBuf>,
    pub timeout: Duration,
    pub deep: bool,
    pub json: bool,
}

/// What the command was asked to do, resolved.
#[derive(Debug, Clone)]
pub struct Options {
    /// `http://host:port` of the gateway.
    pub url: String,
    pub token: Option<String>,
    /// Where the token came from (or where none was found), for the unauthorized message.
    pub token_source: String,
    /// The total deadline for the whole command.
    pub timeout: Duration,
    pub deep: bool,
    pub json: bool,
}

/// The environment files install.sh writes, user first: a user running `status` for their own
/// units should not need root to read the system one.
pub fn default_env_files() -> Vec<PathBuf> {
    let config_home =
        std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()).map(PathBuf::from).or_else(|| {
            std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".config"))
        });
    config_home
        .map(|dir| dir.join("clawgate/clawgate.env"))
        .into_iter()
        .chain([PathBuf::from("/etc/clawgate/clawgate.env")])
        .collect()
}

/// Reads `VAR=value` lines of a systemd environment file: `#`/`;` comments, optional `export`,
/// a value optionally in matching quotes. Enough for the variables `status` needs.
pub fn read_env_file(path: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let k = k.trim().trim_start_matches("export ").trim();
            let v = v.trim();
            let v = [('"', '"'), ('\'', '\'')]
                .iter()
                .find_map(|(a, b)| v.strip_prefix(*a).and_then(|v| v.strip_suffix(*b)))
                .unwrap_or(v);
            (k.to_owned(), v.to_owned())
        })
        .collect())
}

/// `URL` or `HOST:PORT` → `http://HOST:PORT` without a trailing slash. A wildcard listen
/// address (`0.0.0.0`, `[::]`) becomes loopback: that is where a local gateway answers.
pub fn normalize_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let (scheme, rest) = text.split_once("://").unwrap_or(("http", text));
    let rest = rest.trim_end_matches('/');
    if !matches!(scheme, "http" | "https") {
        return Err(format!("\"{text}\": only http:// and https:// URLs are supported"));
    }
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.is_empty() {
        return Err(format!("\"{text}\" names no host"));
    }
    let authority = match authority.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => authority.to_owned(),
    };
    let path = if path.is_empty() { String::new() } else { format!("/{path}") };
    Ok(format!("{scheme}://{authority}{path}"))
}

impl Options {
    /// Resolves the URL and token: flag or environment first, then the environment file.
    pub fn resolve(given: Given) -> Result<Options, String> {
        let (files, explicit) = match given.env_file {
            Some(path) => (vec![path], true),
            None => (default_env_files(), false),
        };
        let mut file_vars = BTreeMap::new();
        let mut file_used = None;
        let mut unreadable = Vec::new();
        for path in files {
            match read_env_file(&path) {
                Ok(vars) => {
                    file_vars = vars;
                    file_used = Some(path);
                    break;
                }
                Err(e) if explicit => return Err(format!("cannot read {}: {e}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => unreadable.push(format!("{}: {e}", path.display())),
            }
        }
        let from_file = |name: &str| file_vars.get(name).filter(|v| !v.is_empty()).cloned();
        let listen = std::env::var("CLAWGATE_LISTEN")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| from_file("CLAWGATE_LISTEN"))
            .unwrap_or_else(|| crate::config::DEFAULT_LISTEN.to_owned());
        let url = normalize_url(given.url.as_deref().filter(|u| !u.is_empty()).unwrap_or(&listen))?;
        let (token, token_source) = match given.token.filter(|t| !t.is_empty()) {
            Some(token) => (Some(token), "the token from --token or CLAWGATE_TOKEN was refused".to_owned()),
            None => match (from_file("CLAWGATE_TOKEN"), &file_used) {
                (Some(token), Some(path)) => {
                    (Some(token), format!("the token from CLAWGATE_TOKEN in {} was refused", path.display()))
                }
                (_, Some(path)) => (None, format!("no token given, and none in {}", path.display())),
                (_, None) if !unreadable.is_empty() => {
                    (None, format!("no token given, and cannot read {}", unreadable.join(", ")))
                }
                (_, None) => {
                    (None, "no token given (--token, CLAWGATE_TOKEN or the environment file)".to_owned())
                }
            },
        };
        if given.timeout.is_zero() {
            return Err("--timeout must be more than zero".to_owned());
        }
        Ok(Options { url, token, token_source, timeout: given.timeout, deep: given.deep, json: given.json })
    }
}

/// Longest any single probe may take (within what is left of the total).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps the total deadline.
struct Clock {
    end: Instant,
}

impl Clock {
    /// Time for the next probe: its own cap, within what is left, leaving a margin to print.
    fn budget(&self) -> Option<Duration> {
        let left =
            self.end.saturating_duration_since(Instant::now()).checked_sub(Duration::from_millis(100))?;
        (left >= Duration::from_millis(20)).then(|| left.min(PROBE_TIMEOUT))
    }
}

/// One probe's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Probe {
    pub ok: bool,
    /// How long it took, ms (0.1 ms resolution).
    pub ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq)]
enum ProbeError {
    /// HTTP 401: the gateway is there and wants a (different) token.
    Unauthorized,
    Failed(String),
}

impl From<String> for ProbeError {
    fn from(message: String) -> ProbeError {
        ProbeError::Failed(message)
    }
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Unauthorized => f.write_str("unauthorized (HTTP 401)"),
            ProbeError::Failed(message) => f.write_str(message),
        }
    }
}

/// The whole report: the verdict, the gateway's status sections (`null` when it could not be
/// read), the probes and systemd's view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Report {
    pub schema: String,
    pub url: String,
    pub ok: bool,
    pub exit_code: i32,
    pub reasons: Vec<String>,
    pub gateway: Option<status::Gateway>,
    pub event_loop: Option<status::EventLoop>,
    pub worker: Option<status::Worker>,
    pub memory: Option<status::Memory>,
    pub cache: Option<status::Cache>,
    pub jobs: Option<status::Jobs>,
    pub stores: Option<status::Stores>,
    pub websocket: Option<status::Websocket>,
    /// Shield mode: the OpenClaw gateway behind this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::relay::probe::UpstreamStatus>,
    pub agents: Option<crate::agents::AgentsView>,
    pub budgets: Option<crate::budget::BudgetStatus>,
    pub probes: BTreeMap<String, Probe>,
    /// `systemctl show` fields by unit (`--deep`), as systemd reports them.
    pub systemd: Option<Value>,
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A blocking HTTP client that returns error statuses as values and never waits past `timeout`.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into()
}

/// A transport error in the words `status` and `report` print.
pub(crate) fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens)".into()
        }
        other => other.to_string(),
    }
}

fn get_json(opts: &Options, path: &str, timeout: Duration) -> Result<Value, ProbeError> {
    let mut req = agent(timeout).get(format!("{}{}", opts.url, path));
    if let Some(token) = &opts.token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let mut res = req.call().map_err(|e| describe(&e))?;
    let status = res.status().as_u16();
    if status == 401 {
        return Err(ProbeError::Unauthorized);
    }
    let body = res.body_mut().with_config().limit(16 << 20).read_to_string().map_err(|e| describe(&e))?;
    let value: Value = serde_json::from_str(&body).map_err(|_| format!("HTTP {status}: not JSON"))?;
    if !(200..300).contains(&status) && status != 503 {
        return Err(format!("HTTP {status}: {}", value["error"]["message"].as_str().unwrap_or("")).into());
    }
    Ok(value)
}

fn post_json(opts: &Options, path: &str, body: &Value, timeout: Duration) -> Result<Value, ProbeError> {
    let mut req =
        agent(timeout).post(format!("{}{}", opts.url, path)).header("content-type", "application/json");
    if let Some(token) = &opts.token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let mut res = req.send(body.to_string()).map_err(|e| describe(&e))?;
    if res.status().as_u16() == 401 {
        return Err(ProbeError::Unauthorized);
    }
    let text = res.body_mut().with_config().limit(64 << 20).read_to_string().map_err(|e| describe(&e))?;
    let value: Value = serde_json::from_str(&text).map_err(|_| "answer is not JSON".to_owned())?;
    if value["ok"] == true {
        Ok(value["payload"].clone())
    } else {
        Err(format!(
            "{}: {}",
            value["error"]["code"].as_str().unwrap_or("?"),
            value["error"]["message"].as_str().unwrap_or("")
        )
        .into())
    }
}

/// The WebSocket handshake an OpenClaw client performs: challenge, connect, hello-ok.
fn ws_probe(opts: &Options, timeout: Duration) -> Result<Value, ProbeError> {
    let started = Instant::now();
    let host =
        opts.url.strip_prefix("http://").ok_or("the WebSocket probe needs an http:// URL".to_owned())?;
    let host = host.split('/').next().unwrap_or(host);
    let addr = host.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("no address".to_owned())?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let (mut socket, _) =
        tungstenite::client(format!("ws://{host}/ws"), stream).map_err(|e| format!("upgrade failed: {e}"))?;
    let read_json = |socket: &mut tungstenite::WebSocket<TcpStream>| -> Result<Value, ProbeError> {
        loop {
            if started.elapsed() > timeout {
                return Err("timed out".to_owned().into());
            }
            match socket.read().map_err(|e| e.to_string())? {
                tungstenite::Message::Text(text) => {
                    return serde_json::from_str(&text).map_err(|e| e.to_string().into());
                }
                tungstenite::Message::Close(frame) => {
                    return Err(format!(
                        "closed: {}",
                        frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default()
                    )
                    .into());
                }
                _ => continue,
            }
        }
    };
    let challenge = read_json(&mut socket)?;
    if challenge["event"] != "connect.challenge" {
        return Err(format!("expected connect.challenge, got {}", challenge["event"]).into());
    }
    let connect = json!({
        "type": "req", "id": "status-probe", "method": "connect",
        "params": {
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "cli", "version": env!("CARGO_PKG_VERSION"), "platform": std::env::consts::OS, "mode": "probe"},
            "role": "operator", "scopes": ["operator.read"],
            "auth": opts.token.as_ref().map(|t| json!({"token": t})).unwrap_or(json!({})),
        }
    });
    socket.send(tungstenite::Message::text(connect.to_string())).map_err(|e| e.to_string())?;
    let hello = loop {
        let frame = read_json(&mut socket)?;
        if frame["type"] == "res" {
            break frame;
        }
    };
    let _ = socket.close(None);
    if hello["ok"] != true {
        return Err(format!("connect refused: {}", hello["error"]["message"].as_str().unwrap_or("?")).into());
    }
    Ok(json!({"protocol": hello["payload"]["protocol"], "connId": hello["payload"]["server"]["connId"]}))
}

/// `systemctl show` fields of clawgate's units, system and user, when systemd is there.
fn systemd_units(timeout: Duration) -> Value {
    let mut units = serde_json::Map::new();
    for (scope, args) in [("system", &[][..]), ("user", &["--user"][..])] {
        for unit in ["clawgate.service", "clawgate-usage-worker.service"] {
            let Some(out) = run_with_timeout(
                "systemctl",
                &[args, &["show", unit, "--property=LoadState,ActiveState,SubState,NRestarts,MainPID,MemoryCurrent,MemoryMax,Result"]].concat(),
                timeout,
            ) else {
                return json!({"available": false});
            };
            let fields: serde_json::Map<String, Value> = out
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                .collect();
            if fields.get("LoadState").and_then(Value::as_str).is_some_and(|s| s != "not-found") {
                units.insert(format!("{scope}:{unit}"), Value::Object(fields));
            }
        }
    }
    json!({"available": true, "units": units})
}

/// Runs a command with a deadline; `None` when it is missing, fails or runs too long.
fn run_with_timeout(program: &str, args: &[&str], timeout: Duration) -> Option<String> {
    #[allow(clippy::disallowed_methods)] // a read-only query of systemd, not a worker process
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let end = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                let mut out = String::new();
                std::io::Read::read_to_string(child.stdout.as_mut()?, &mut out).ok()?;
                return Some(out);
            }
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Checks the worker socket and its directory are private (when on this host).
fn socket_check(path: &Path) -> Result<Value, ProbeError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = path.parent().ok_or("no parent directory".to_owned())?;
    let dir_meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir_mode = dir_meta.mode() & 0o777;
    // In managed mode the socket is unlinked once the worker has connected: nothing can
    // connect to it any more, which is the point. Then only the directory is checked.
    let Some(meta) = std::fs::metadata(path).ok() else {
        if dir_mode & 0o077 != 0 {
            return Err(format!("directory mode {dir_mode:o} is not private (want 700)").into());
        }
        return Ok(
            json!({"path": path, "socket": "absent (unlinked after the worker connected)", "dirMode": format!("{dir_mode:o}")}),
        );
    };
    let mode = meta.mode() & 0o777;
    let problems: Vec<String> = [
        (!meta.file_type().is_socket()).then(|| "not a socket".to_owned()),
        (mode & 0o077 != 0).then(|| format!("socket mode {mode:o} is not private (want 600)")),
        (dir_mode & 0o077 != 0).then(|| format!("directory mode {dir_mode:o} is not private (want 700)")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if problems.is_empty() {
        Ok(json!({"path": path, "mode": format!("{mode:o}"), "dirMode": format!("{dir_mode:o}")}))
    } else {
        Err(problems.join("; ").into())
    }
}

/// Runs every probe within the deadline and returns the report; its `exit_code` is the
/// command's.
pub fn collect(opts: &Options) -> Report {
    let clock = Clock { end: Instant::now() + opts.timeout };
    let mut probes = BTreeMap::new();
    let mut unauthorized = false;
    let mut run = |name: &str, f: &mut dyn FnMut(Duration) -> Result<Value, ProbeError>| -> Option<Value> {
        let Some(budget) = clock.budget() else {
            let skipped = Probe { error: Some("skipped: total deadline reached".into()), ..Probe::default() };
            probes.insert(name.to_owned(), skipped);
            return None;
        };
        let started = Instant::now();
        let res = f(budget);
        let ms = round1(started.elapsed().as_secs_f64() * 1000.0);
        unauthorized |= res == Err(ProbeError::Unauthorized);
        let (probe, detail) = match res {
            Ok(detail) => (Probe { ok: true, ms, detail: Some(detail.clone()), error: None }, Some(detail)),
            Err(error) => (Probe { ok: false, ms, detail: None, error: Some(error.to_string()) }, None),
        };
        probes.insert(name.to_owned(), probe);
        detail
    };

    let health = run("health", &mut |t| get_json(opts, "/healthz", t));
    let status: Option<Status> = if health.is_some() {
        run("status", &mut |t| {
            let value = get_json(opts, "/api/v1/status", t)?;
            serde_json::from_value::<Status>(value.clone())
                .map(|_| value)
                .map_err(|e| ProbeError::Failed(format!("unreadable status document: {e}")))
        })
        .and_then(|value| serde_json::from_value(value).ok())
    } else {
        None
    };
    if opts.deep && status.is_some() {
        run("websocket", &mut |t| ws_probe(opts, t));
        run("workerPing", &mut |t| {
            get_json(opts, "/api/v1/worker/ping", t).and_then(|v| {
                if v["ok"] == true {
                    Ok(v)
                } else {
                    Err(v["error"]["message"].as_str().unwrap_or("worker ping failed").to_owned().into())
                }
            })
        });
        run("usage", &mut |t| {
            post_json(opts, "/api/v1/call/usage.cost", &json!({"days": 1}), t)
                .map(|p| json!({"totalTokens": p["totals"]["totalTokens"]}))
        });
        if let Some(path) = status.as_ref().and_then(|s| s.worker.socket.clone()) {
            run("socket", &mut |_| socket_check(&path));
        }
        // Shield mode: the upstream's liveness probe from here too, beside the gateway's view.
        if let Some(upstream) = status.as_ref().and_then(|s| s.upstream.as_ref()) {
            let url = upstream.url.replacen("ws://", "http://", 1);
            run("upstream", &mut |t| {
                let direct = Options { url: url.clone(), token: None, ..opts.clone() };
                get_json(&direct, "/healthz", t)
            });
        }
    }
    let systemd = if opts.deep { clock.budget().map(systemd_units) } else { None };
    // The status document is the report's own sections; no need to carry it twice.
    if let Some(probe) = probes.get_mut("status") {
        probe.detail = None;
    }
    verdict(opts, status, probes, systemd, unauthorized)
}

/// The exit code and its reasons, from what the probes found.
fn verdict(
    opts: &Options,
    status: Option<Status>,
    probes: BTreeMap<String, Probe>,
    systemd: Option<Value>,
    unauthorized: bool,
) -> Report {
    let mut reasons: Vec<String> = Vec::new();
    let exit_code = match &status {
        None if !probes.get("health").is_some_and(|p| p.ok) => {
            reasons.push("gateway unreachable".into());
            EXIT_UNREACHABLE
        }
        None if unauthorized => {
            reasons.push(format!("unauthorized (HTTP 401): {}", opts.token_source));
            EXIT_UNAUTHORIZED
        }
        None => {
            reasons.push("gateway status unavailable".into());
            EXIT_UNREACHABLE
        }
        Some(status) => {
            let state = status.worker.state;
            if state == WorkerState::Failed {
                reasons.push("worker failed".into());
            } else if !state.is_up() {
                reasons.push(format!("worker {}", state.as_str()));
            }
            if status.event_loop.degraded {
                reasons.push("runtime lag".into());
            }
            if status.upstream.as_ref().is_some_and(|u| !u.reachable) {
                reasons.push("upstream unreachable".into());
            }
            // A wrong or empty state dir answers $0.00 without an error: not ok.
            if let Some(warning) = status.agents.as_ref().and_then(|a| a.warning.clone()) {
                reasons.push(warning);
            }
            if opts.deep {
                for (name, probe) in &probes {
                    if !probe.ok {
                        reasons.push(format!("{name} probe failed"));
                    }
                }
            }
            if state == WorkerState::Failed {
                EXIT_UNREACHABLE
            } else if reasons.is_empty() {
                EXIT_OK
            } else {
                EXIT_DEGRADED
            }
        }
    };
    let mut report = Report {
        schema: SCHEMA.to_owned(),
        url: opts.url.clone(),
        ok: exit_code == EXIT_OK,
        exit_code,
        reasons,
        probes,
        systemd,
        ..Report::default()
    };
    if let Some(s) = status {
        report.gateway = Some(s.gateway);
        report.event_loop = Some(s.event_loop);
        report.worker = Some(s.worker);
        report.memory = Some(s.memory);
        report.cache = Some(s.cache);
        report.jobs = Some(s.jobs);
        report.stores = s.stores;
        report.websocket = Some(s.websocket);
        report.upstream = s.upstream;
        report.agents = s.agents;
        report.budgets = s.budgets;
    }
    report
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "n/a".into())
}

fn na<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into())
}

/// Formats the report for a person.
pub fn render(report: &Report, colour: bool) -> String {
    let paint =
        |code: &str, text: &str| if colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() };
    let ok = |good: bool, text: &str| paint(if good { "32" } else { "31" }, text);
    let mut out = String::new();
    let verdict = match report.exit_code {
        EXIT_OK => ok(true, "ok"),
        EXIT_DEGRADED => paint("33", "degraded"),
        EXIT_UNAUTHORIZED => ok(false, "unauthorized"),
        _ => ok(false, "unreachable or failed"),
    };
    match report.exit_code {
        // The reason says it all: "unauthorized (HTTP 401): <which token, from where>".
        EXIT_UNAUTHORIZED if !report.reasons.is_empty() => {
            out.push_str(&format!("clawgate status: {}", ok(false, &report.reasons.join(", "))))
        }
        _ => {
            out.push_str(&format!("clawgate status: {verdict}"));
            if !report.reasons.is_empty() {
                out.push_str(&format!(" ({})", report.reasons.join(", ")));
            }
        }
    }
    out.push('\n');
    let health = report.probes.get("health");
    match &report.gateway {
        None if report.exit_code == EXIT_UNAUTHORIZED => out.push_str(&format!(
            "Gateway   {} reachable ({} ms) but {}: pass --token, set CLAWGATE_TOKEN, or put it in the environment file\n",
            report.url,
            na(health.map(|h| h.ms)),
            ok(false, "refused the token")
        )),
        None => {
            let error = health
                .and_then(|p| p.error.as_deref())
                .or_else(|| report.probes.get("status").and_then(|p| p.error.as_deref()))
                .unwrap_or("unreachable");
            out.push_str(&format!("Gateway   {}: {}\n", report.url, ok(false, error)));
        }
        Some(g) => out.push_str(&format!(
            "Gateway   {} reachable ({} ms), version {}, pid {}, up {}, RSS {}, auth {}\n",
            g.listen,
            na(health.map(|h| h.ms)),
            g.version,
            g.pid,
            human_age(g.uptime_ms),
            mib(g.rss_bytes),
            match g.auth_mode {
                status::AuthMode::Token => "token",
                status::AuthMode::None => "none",
            }
        )),
    }
    if let Some(el) = &report.event_loop {
        out.push_str(&format!(
            "Runtime   {} max {} ms, p99 {} ms, utilisation {}\n",
            ok(!el.degraded, if el.degraded { "degraded" } else { "ok" }),
            el.delay_max_ms,
            el.delay_p99_ms,
            el.utilization
        ));
    }
    if let Some(w) = &report.worker {
        let by_cause = if w.restarts_by_cause.is_empty() {
            String::new()
        } else {
            let causes: Vec<String> = w.restarts_by_cause.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!(" ({})", causes.join(", "))
        };
        out.push_str(&format!(
            "Worker    {} ({}), pid {}, RSS {} / cap {}, heap {} / budget {}, restarts {}{by_cause}\n",
            ok(w.state.is_up(), w.state.as_str()),
            w.mode,
            na(w.pid),
            mib(w.rss_bytes),
            mib(Some(w.memory.cap_bytes)),
            mib(w.heap_bytes),
            mib(Some(w.memory.budget_bytes)),
            w.restarts,
        ));
        if let Some(after) = w.retry_after_ms.filter(|_| !w.state.is_up()) {
            out.push_str(&format!("          next try in {}\n", human_age(after)));
        }
        if let Some(exit) = &w.last_exit {
            let now = status::epoch_ms(std::time::SystemTime::now());
            out.push_str(&format!(
                "          last exit: {} {} ago (code {}, signal {}){}\n",
                exit.cause,
                human_age(now.saturating_sub(exit.at_ms)),
                na(exit.code),
                na(exit.signal),
                exit.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            ));
        }
        if w.rejected_peers > 0 {
            out.push_str(&format!(
                "          {} connection(s) to the worker socket refused: not from the spawned worker\n",
                w.rejected_peers
            ));
        }
    }
    if let Some(u) = &report.upstream {
        let relay = &u.relay;
        let answered: u64 = relay.answered.values().sum();
        let version = u.version.as_deref().map(|v| format!("OpenClaw {v}, ")).unwrap_or_default();
        if u.reachable {
            out.push_str(&format!(
                "Upstream  {} {} ({} ms), {version}its readiness {}\n",
                u.url,
                ok(true, "reachable"),
                na(u.latency_ms),
                match u.ready {
                    Some(true) => "ok".to_owned(),
                    Some(false) => format!("failing: {}", u.failing.join(", ")),
                    None => "n/a".to_owned(),
                }
            ));
        } else {
            out.push_str(&format!(
                "Upstream  {}: {} for {} ({}); usage keeps answering over HTTP\n",
                u.url,
                ok(false, "unreachable"),
                u.for_ms.map(human_age).unwrap_or_else(|| "n/a".into()),
                u.error.as_deref().unwrap_or("not probed yet")
            ));
        }
        out.push_str(&format!(
            "          relayed {} WebSockets ({} open, {} closed for an upstream restart), {} HTTP requests ({} failed); usage calls answered here {answered}, refused {}\n",
            relay.ws_connections, relay.ws_open, relay.ws_upstream_lost, relay.http_requests, relay.http_failures, relay.forbidden
        ));
    }
    if let Some(c) = &report.cache {
        let lookup = |k: &str| na(c.lookups.get(k));
        out.push_str(&format!(
            "Cache     {} answers ({} bytes), newest {} old, oldest {} old; hits {} misses {} stale {} shared {}\n",
            c.answers,
            c.bytes,
            c.newest_age_ms.map(human_age).unwrap_or_else(|| "n/a".into()),
            c.oldest_age_ms.map(human_age).unwrap_or_else(|| "n/a".into()),
            lookup("hit"),
            lookup("miss"),
            lookup("stale"),
            lookup("shared")
        ));
    }
    if let Some(j) = &report.jobs {
        out.push_str(&format!(
            "Jobs      p50 {} ms, p99 {} ms over the last {}; running {} of {}, {} waiting\n",
            na(j.p50_ms),
            na(j.p99_ms),
            j.recent,
            j.running,
            j.max_jobs,
            j.waiters
        ));
    }
    if let Some(agents) = &report.agents {
        match &agents.warning {
            Some(warning) => out.push_str(&format!("Agents    {}\n", paint("33", warning))),
            None => {
                let more = agents.count.saturating_sub(agents.ids.len() as u64);
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                out.push_str(&format!(
                    "Agents    {} in the state dir: {}{more}\n",
                    agents.count,
                    agents.ids.join(", ")
                ));
            }
        }
    }
    if let Some(budgets) = &report.budgets {
        for line in &budgets.items {
            out.push_str(&format!("Budget    {}\n", budget_line(line, &paint)));
        }
        if let Some(error) = &budgets.error {
            out.push_str(&format!("          {}\n", paint("33", &format!("last refresh failed: {error}"))));
        }
    }
    if let Some(st) = &report.stores {
        out.push_str(&format!(
            "Stores    {} agents, {} files ({} scope); last job parsed {} files, {} bytes, skipped {} lines\n",
            st.agents, st.files, st.scope, st.files_parsed, st.bytes_parsed, st.lines_skipped
        ));
    }
    for (name, probe) in report.probes.iter().filter(|(n, _)| !matches!(n.as_str(), "health" | "status")) {
        let what = match (&probe.detail, &probe.error) {
            (Some(detail), _) if probe.ok => compact(detail),
            (_, Some(error)) => error.clone(),
            _ => "failed".to_owned(),
        };
        out.push_str(&format!(
            "Probe     {name}: {} in {} ms {what}\n",
            ok(probe.ok, if probe.ok { "ok" } else { "FAILED" }),
            probe.ms
        ));
    }
    if let Some(systemd) = report.systemd.as_ref().and_then(Value::as_object) {
        if systemd.get("available") == Some(&Value::Bool(false)) {
            out.push_str("systemd   not available\n");
        } else if let Some(units) = systemd.get("units").and_then(Value::as_object) {
            if units.is_empty() {
                out.push_str("systemd   no clawgate units loaded\n");
            }
            for (unit, fields) in units {
                out.push_str(&format!("systemd   {unit}: {}\n", compact(fields)));
            }
        }
    }
    out
}

/// `month, all agents: $12.30 of $500.00 (2%), forecast $80.10 · ok`.
fn budget_line(line: &crate::budget::Line, paint: &dyn Fn(&str, &str) -> String) -> String {
    use crate::budget::Level;
    let money = crate::report::render::dollars;
    let period = line.period.map_or("?", crate::budget::Period::as_str);
    let who = if line.agent == "all" { "all agents".to_owned() } else { format!("agent {}", line.agent) };
    let Some(spend) = line.spend_usd else {
        return format!(
            "{period} {}, {who}: {} (spend not known yet)",
            line.period_key,
            money(line.budget_usd)
        );
    };
    let mut text = format!(
        "{period} {}, {who}: {} of {} ({:.0}%)",
        line.period_key,
        money(spend),
        money(line.budget_usd),
        line.ratio.unwrap_or(0.0) * 100.0
    );
    if let Some(forecast) = line.forecast_usd {
        text.push_str(&format!(", forecast {} by month end", money(forecast)));
    }
    let (code, verdict) = match line.level {
        Level::Exceeded => ("31", "EXCEEDED"),
        Level::Warning => ("33", "over 80%"),
        Level::Ok if line.forecast_over => ("33", "forecast over budget"),
        Level::Ok => ("32", "ok"),
    };
    format!("{text} · {}", paint(code, verdict))
}

fn compact(v: &Value) -> String {
    match v.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", if let Value::String(s) = v { s.clone() } else { v.to_string() }))
            .collect::<Vec<_>>()
            .join(" "),
        None => v.to_string(),
    }
}

fn human_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Runs the command: prints the report and returns the exit code.
pub fn run(opts: &Options) -> i32 {
    let report = collect(opts);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        let colour =
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        print!("{}", render(&report, colour));
    }
    report.exit_code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(url: &str) -> Options {
        Options {
            url: url.into(),
            token: None,
            token_source: "no token given".into(),
            timeout: DEFAULT_TIMEOUT,
            deep: false,
            json: false,
        }
    }

    #[test]
    fn unreachable_renders_without_colour() {
        let mut probes = BTreeMap::new();
        probes.insert(
            "health".to_owned(),
            Probe { ok: false, ms: 0.4, detail: None, error: Some("connection refused".into()) },
        );
        let report = verdict(&opts("http://127.0.0.1:1"), None, probes, None, false);
        assert_eq!(report.exit_code, EXIT_UNREACHABLE);
        let text = render(&report, false);
        assert!(text.starts_with("clawgate status: unreachable or failed (gateway unreachable)"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn a_refused_token_is_unauthorized_not_unreachable() {
        let mut probes = BTreeMap::new();
        probes.insert("health".to_owned(), Probe { ok: true, ms: 1.0, ..Probe::default() });
        probes.insert(
            "status".to_owned(),
            Probe { ok: false, ms: 1.0, detail: None, error: Some("unauthorized (HTTP 401)".into()) },
        );
        let report = verdict(&opts("http://127.0.0.1:1"), None, probes, None, true);
        assert_eq!(report.exit_code, EXIT_UNAUTHORIZED);
        assert_eq!(report.reasons, ["unauthorized (HTTP 401): no token given"]);
        let text = render(&report, false);
        assert!(text.starts_with("clawgate status: unauthorized (HTTP 401): no token given\n"), "{text}");
        assert!(text.contains("refused the token"), "{text}");
    }

    #[test]
    fn a_failed_worker_shows_its_reason_and_next_try() {
        let mut status = Status::default();
        status.worker.state = WorkerState::Failed;
        status.worker.mode = "managed".into();
        status.worker.retry_after_ms = Some(297_000);
        status.worker.last_exit = Some(status::LastExit {
            cause: "config_error".into(),
            code: Some(78),
            at_ms: status::epoch_ms(std::time::SystemTime::now()),
            reason: Some("state directory /x does not exist or is not a directory".into()),
            ..status::LastExit::default()
        });
        let mut probes = BTreeMap::new();
        probes.insert("health".to_owned(), Probe { ok: true, ms: 1.0, ..Probe::default() });
        let report = verdict(&opts("http://127.0.0.1:1"), Some(status), probes, None, false);
        assert_eq!(report.exit_code, EXIT_UNREACHABLE);
        let text = render(&report, false);
        assert!(text.contains("next try in 4m57s"), "{text}");
        assert!(
            text.contains(
                "last exit: config_error 0s ago (code 78, signal n/a): state directory /x does not exist"
            ),
            "{text}"
        );
    }

    #[test]
    fn urls_without_a_scheme_and_wildcards() {
        assert_eq!(normalize_url("127.0.0.1:18790").as_deref(), Ok("http://127.0.0.1:18790"));
        assert_eq!(normalize_url("localhost:18790/").as_deref(), Ok("http://localhost:18790"));
        assert_eq!(normalize_url("http://h:1/").as_deref(), Ok("http://h:1"));
        assert_eq!(normalize_url("https://h.example/clawgate").as_deref(), Ok("https://h.example/clawgate"));
        assert_eq!(normalize_url("0.0.0.0:18790").as_deref(), Ok("http://127.0.0.1:18790"));
        assert_eq!(normalize_url("[::]:18790").as_deref(), Ok("http://[::1]:18790"));
        assert!(normalize_url("ftp://h:1").is_err());
        assert!(normalize_url("http://").is_err());
    }

    #[test]
    fn env_files_are_read_as_systemd_does() {
        let dir = std::env::temp_dir().join(format!("clawgate-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("clawgate.env");
        std::fs::write(
            &path,
            "# comment\n;also\nCLAWGATE_TOKEN=\"s3cret\"\n  CLAWGATE_LISTEN = 0.0.0.0:18791\n#CLAWGATE_TOKEN=old\nbroken line\n",
        )
        .unwrap();
        let vars = read_env_file(&path).unwrap();
        assert_eq!(vars.get("CLAWGATE_TOKEN").map(String::as_str), Some("s3cret"));
        assert_eq!(vars.get("CLAWGATE_LISTEN").map(String::as_str), Some("0.0.0.0:18791"));
        assert_eq!(vars.len(), 2);
        let given = Given { env_file: Some(path.clone()), timeout: DEFAULT_TIMEOUT, ..Given::default() };
        let resolved = Options::resolve(given).unwrap();
        assert_eq!(resolved.token.as_deref(), Some("s3cret"));
        assert!(resolved.token_source.contains("clawgate.env"), "{}", resolved.token_source);
        // A flag wins over the file.
        let given = Given {
            env_file: Some(path),
            token: Some("flag".into()),
            url: Some("localhost:1".into()),
            timeout: DEFAULT_TIMEOUT,
            ..Given::default()
        };
        let resolved = Options::resolve(given).unwrap();
        assert_eq!((resolved.token.as_deref(), resolved.url.as_str()), (Some("flag"), "http://localhost:1"));
        let missing = Given { env_file: Some(dir.join("nope.env")), ..Given::default() };
        assert!(Options::resolve(missing).unwrap_err().contains("nope.env"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
