//! `clawgate status [--deep] [--json]`: an operator's status command that always answers.
//!
//! One total deadline bounds the whole command (default 5 s) and every probe has its own,
//! shorter one, so a stalled gateway (SIGSTOPped, or a port that accepts and never answers)
//! yields "timed out" lines and exit code 2 instead of a hang. Probes are plain blocking I/O with
//! socket timeouts: no runtime to starve, nothing that waits without a deadline.
//!
//! Exit codes: 0 ok, 1 degraded (reachable, but the worker is not ready or the runtime lags),
//! 2 unreachable or failed. `--json` prints one document with schema `clawgate.status/v1`
//! (documented in docs/ops/status.md).

use std::{
    io::IsTerminal as _,
    net::{TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// The JSON schema name; bump the suffix on incompatible changes.
pub const SCHEMA: &str = "clawgate.status/v1";

/// What the command was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// `http://host:port` of the gateway.
    pub url: String,
    pub token: Option<String>,
    /// The total deadline for the whole command.
    pub timeout: Duration,
    pub deep: bool,
    pub json: bool,
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
fn probe_result(started: Instant, res: Result<Value, String>) -> Value {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match res {
        Ok(detail) => json!({"ok": true, "ms": round1(ms), "detail": detail}),
        Err(error) => json!({"ok": false, "ms": round1(ms), "error": error}),
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into()
}

fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens)".into()
        }
        other => other.to_string(),
    }
}

fn get_json(opts: &Options, path: &str, timeout: Duration) -> Result<Value, String> {
    let mut req = agent(timeout).get(format!("{}{}", opts.url, path));
    if let Some(token) = &opts.token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let mut res = req.call().map_err(|e| describe(&e))?;
    let status = res.status().as_u16();
    let body = res.body_mut().read_to_string().map_err(|e| describe(&e))?;
    let value: Value = serde_json::from_str(&body).map_err(|_| format!("HTTP {status}: not JSON"))?;
    if status == 401 {
        return Err("unauthorized: pass --token or set CLAWGATE_TOKEN".into());
    }
    if !(200..300).contains(&status) && status != 503 {
        return Err(format!("HTTP {status}: {}", value["error"]["message"].as_str().unwrap_or("")));
    }
    Ok(value)
}

fn post_json(opts: &Options, path: &str, body: &Value, timeout: Duration) -> Result<Value, String> {
    let mut req =
        agent(timeout).post(format!("{}{}", opts.url, path)).header("content-type", "application/json");
    if let Some(token) = &opts.token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let mut res = req.send(body.to_string()).map_err(|e| describe(&e))?;
    let text = res.body_mut().with_config().limit(64 << 20).read_to_string().map_err(|e| describe(&e))?;
    let value: Value = serde_json::from_str(&text).map_err(|_| "answer is not JSON".to_owned())?;
    if value["ok"] == true {
        Ok(value["payload"].clone())
    } else {
        Err(format!(
            "{}: {}",
            value["error"]["code"].as_str().unwrap_or("?"),
            value["error"]["message"].as_str().unwrap_or("")
        ))
    }
}

/// The WebSocket handshake an OpenClaw client performs: challenge, connect, hello-ok.
fn ws_probe(opts: &Options, timeout: Duration) -> Result<Value, String> {
    let started = Instant::now();
    let host = opts.url.strip_prefix("http://").ok_or("--deep WebSocket probe needs an http:// URL")?;
    let host = host.trim_end_matches('/');
    let addr = host.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("no address")?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let (mut socket, _) =
        tungstenite::client(format!("ws://{host}/ws"), stream).map_err(|e| format!("upgrade failed: {e}"))?;
    let read_json = |socket: &mut tungstenite::WebSocket<TcpStream>| -> Result<Value, String> {
        loop {
            if started.elapsed() > timeout {
                return Err("timed out".into());
            }
            match socket.read().map_err(|e| e.to_string())? {
                tungstenite::Message::Text(text) => {
                    return serde_json::from_str(&text).map_err(|e| e.to_string());
                }
                tungstenite::Message::Close(frame) => {
                    return Err(format!(
                        "closed: {}",
                        frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default()
                    ));
                }
                _ => continue,
            }
        }
    };
    let challenge = read_json(&mut socket)?;
    if challenge["event"] != "connect.challenge" {
        return Err(format!("expected connect.challenge, got {}", challenge["event"]));
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
        return Err(format!("connect refused: {}", hello["error"]["message"].as_str().unwrap_or("?")));
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
fn socket_check(path: &str) -> Result<Value, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let path = std::path::Path::new(path);
    let dir = path.parent().ok_or("no parent directory")?;
    let dir_meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir_mode = dir_meta.mode() & 0o777;
    // In managed mode the socket is unlinked once the worker has connected: nothing can
    // connect to it any more, which is the point. Then only the directory is checked.
    let Some(meta) = std::fs::metadata(path).ok() else {
        if dir_mode & 0o077 != 0 {
            return Err(format!("directory mode {dir_mode:o} is not private (want 700)"));
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
        Err(problems.join("; "))
    }
}

/// Runs every probe within the deadline and returns the report and exit code.
pub fn collect(opts: &Options) -> (Value, i32) {
    let clock = Clock { end: Instant::now() + opts.timeout };
    let mut probes = serde_json::Map::new();
    let mut run = |name: &str, f: &mut dyn FnMut(Duration) -> Result<Value, String>| -> Option<Value> {
        let Some(budget) = clock.budget() else {
            probes.insert(
                name.into(),
                json!({"ok": false, "ms": 0.0, "error": "skipped: total deadline reached"}),
            );
            return None;
        };
        let started = Instant::now();
        let res = f(budget);
        let value = probe_result(started, res);
        let detail = value["ok"].as_bool().unwrap_or(false).then(|| value["detail"].clone());
        probes.insert(name.into(), value);
        detail
    };

    let health = run("health", &mut |t| get_json(opts, "/healthz", t));
    let status =
        if health.is_some() { run("status", &mut |t| get_json(opts, "/api/v1/status", t)) } else { None };
    if opts.deep && status.is_some() {
        run("websocket", &mut |t| ws_probe(opts, t));
        run("workerPing", &mut |t| {
            get_json(opts, "/api/v1/worker/ping", t).and_then(|v| {
                if v["ok"] == true {
                    Ok(v)
                } else {
                    Err(v["error"]["message"].as_str().unwrap_or("worker ping failed").to_owned())
                }
            })
        });
        run("usage", &mut |t| {
            post_json(opts, "/api/v1/call/usage.cost", &json!({"days": 1}), t)
                .map(|p| json!({"totalTokens": p["totals"]["totalTokens"]}))
        });
        if let Some(path) = status.as_ref().and_then(|s| s["worker"]["socket"].as_str()) {
            let path = path.to_owned();
            run("socket", &mut |_| socket_check(&path));
        }
    }
    let systemd = if opts.deep { clock.budget().map(systemd_units) } else { None };

    let gateway = status.as_ref().map(|s| s["gateway"].clone()).unwrap_or(Value::Null);
    let worker = status.as_ref().map(|s| s["worker"].clone()).unwrap_or(Value::Null);
    let event_loop = status.as_ref().map(|s| s["eventLoop"].clone()).unwrap_or(Value::Null);
    let mut reasons: Vec<String> = Vec::new();
    let exit_code = if health.is_none() || status.is_none() {
        reasons.push("gateway unreachable".into());
        2
    } else {
        let state = worker["state"].as_str().unwrap_or("unknown");
        if state == "failed" {
            reasons.push("worker failed".into());
        } else if !matches!(state, "ready" | "busy") {
            reasons.push(format!("worker {state}"));
        }
        if event_loop["degraded"] == true {
            reasons.push("runtime lag".into());
        }
        if opts.deep {
            for (name, probe) in &probes {
                if probe["ok"] != true {
                    reasons.push(format!("{name} probe failed"));
                }
            }
        }
        if state == "failed" {
            2
        } else if reasons.is_empty() {
            0
        } else {
            1
        }
    };
    let report = json!({
        "schema": SCHEMA,
        "url": opts.url,
        "ok": exit_code == 0,
        "exitCode": exit_code,
        "reasons": reasons,
        "gateway": gateway,
        "eventLoop": event_loop,
        "worker": worker,
        "cache": status.as_ref().map(|s| s["cache"].clone()).unwrap_or(Value::Null),
        "jobs": status.as_ref().map(|s| s["jobs"].clone()).unwrap_or(Value::Null),
        "stores": status.as_ref().map(|s| s["stores"].clone()).unwrap_or(Value::Null),
        "probes": probes,
        "systemd": systemd,
    });
    (report, exit_code)
}

/// Formats the report for a person.
pub fn render(report: &Value, colour: bool) -> String {
    let paint =
        |code: &str, text: &str| if colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() };
    let ok = |good: bool, text: &str| paint(if good { "32" } else { "31" }, text);
    let na = |v: &Value| match v {
        Value::Null => "n/a".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mib =
        |v: &Value| v.as_f64().map(|b| format!("{:.1} MiB", b / 1048576.0)).unwrap_or_else(|| "n/a".into());
    let mut out = String::new();
    let verdict = match report["exitCode"].as_i64() {
        Some(0) => ok(true, "ok"),
        Some(1) => paint("33", "degraded"),
        _ => ok(false, "unreachable or failed"),
    };
    out.push_str(&format!("clawgate status: {verdict}"));
    if let Some(reasons) = report["reasons"].as_array().filter(|r| !r.is_empty()) {
        let list: Vec<String> = reasons.iter().map(na).collect();
        out.push_str(&format!(" ({})", list.join(", ")));
    }
    out.push('\n');
    let g = &report["gateway"];
    let health = &report["probes"]["health"];
    if g.is_null() {
        out.push_str(&format!(
            "Gateway   {}: {}\n",
            report["url"].as_str().unwrap_or(""),
            ok(
                false,
                health["error"]
                    .as_str()
                    .or(report["probes"]["status"]["error"].as_str())
                    .unwrap_or("unreachable")
            )
        ));
    } else {
        out.push_str(&format!(
            "Gateway   {} reachable ({} ms), version {}, pid {}, up {}, RSS {}, auth {}\n",
            na(&g["listen"]),
            na(&health["ms"]),
            na(&g["version"]),
            na(&g["pid"]),
            g["uptimeMs"].as_u64().map(human_age).unwrap_or_else(|| "n/a".into()),
            mib(&g["rssBytes"]),
            na(&g["authMode"])
        ));
    }
    let el = &report["eventLoop"];
    if !el.is_null() {
        let degraded = el["degraded"] == true;
        out.push_str(&format!(
            "Runtime   {} max {} ms, p99 {} ms, utilisation {}\n",
            ok(!degraded, if degraded { "degraded" } else { "ok" }),
            na(&el["delayMaxMs"]),
            na(&el["delayP99Ms"]),
            na(&el["utilization"])
        ));
    }
    let w = &report["worker"];
    if !w.is_null() {
        let state = w["state"].as_str().unwrap_or("unknown");
        let m = &w["memory"];
        out.push_str(&format!(
            "Worker    {} ({}), pid {}, RSS {} / cap {}, heap {} / budget {}, restarts {} {}\n",
            ok(matches!(state, "ready" | "busy"), state),
            na(&w["mode"]),
            na(&w["pid"]),
            mib(&w["rssBytes"]),
            mib(&m["capBytes"]),
            mib(&w["heapBytes"]),
            mib(&m["budgetBytes"]),
            na(&w["restarts"]),
            w["restartsByCause"]
                .as_object()
                .filter(|o| !o.is_empty())
                .map(|o| Value::Object(o.clone()).to_string())
                .unwrap_or_default()
        ));
        if let Some(exit) = w["lastExit"].as_object() {
            let age = exit.get("atMs").and_then(Value::as_u64).map(|at| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(at);
                human_age(now.saturating_sub(at))
            });
            out.push_str(&format!(
                "          last exit: {} {} ago (code {}, signal {})\n",
                na(&exit["cause"]),
                age.unwrap_or_else(|| "?".into()),
                na(&exit["code"]),
                na(&exit["signal"])
            ));
        }
    }
    let c = &report["cache"];
    if !c.is_null() {
        out.push_str(&format!(
            "Cache     {} answers ({} bytes), newest {} old, oldest {} old; hits {} misses {} stale {} shared {}\n",
            na(&c["answers"]),
            na(&c["bytes"]),
            c["newestAgeMs"].as_u64().map(human_age).unwrap_or_else(|| "n/a".into()),
            c["oldestAgeMs"].as_u64().map(human_age).unwrap_or_else(|| "n/a".into()),
            na(&c["lookups"]["hit"]),
            na(&c["lookups"]["miss"]),
            na(&c["lookups"]["stale"]),
            na(&c["lookups"]["shared"])
        ));
    }
    let j = &report["jobs"];
    if !j.is_null() {
        out.push_str(&format!(
            "Jobs      p50 {} ms, p99 {} ms over the last {}; running {} of {}, {} waiting\n",
            na(&j["p50Ms"]),
            na(&j["p99Ms"]),
            na(&j["recent"]),
            na(&j["running"]),
            na(&j["maxJobs"]),
            na(&j["waiters"])
        ));
    }
    let st = &report["stores"];
    if !st.is_null() {
        out.push_str(&format!(
            "Stores    {} agents, {} files ({} scope); last job parsed {} files, {} bytes, skipped {} lines\n",
            na(&st["agents"]),
            na(&st["files"]),
            na(&st["scope"]),
            na(&st["filesParsed"]),
            na(&st["bytesParsed"]),
            na(&st["linesSkipped"])
        ));
    }
    if let Some(probes) = report["probes"].as_object() {
        for (name, probe) in probes.iter().filter(|(n, _)| !matches!(n.as_str(), "health" | "status")) {
            let good = probe["ok"] == true;
            let what = if good {
                compact(&probe["detail"])
            } else {
                probe["error"].as_str().unwrap_or("failed").to_owned()
            };
            out.push_str(&format!(
                "Probe     {name}: {} in {} ms {what}\n",
                ok(good, if good { "ok" } else { "FAILED" }),
                na(&probe["ms"])
            ));
        }
    }
    if let Some(systemd) = report["systemd"].as_object() {
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
    let (report, code) = collect(opts);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        let colour =
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        print!("{}", render(&report, colour));
    }
    code
}

/// Parses `5s`, `500ms`, `1.5` (seconds), `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) =
        text.split_at(text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len()));
    let value: f64 = number.parse().map_err(|_| format!("not a duration: \"{text}\" (e.g. 5s, 500ms)"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        other => return Err(format!("unknown duration unit \"{other}\" (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("duration must be positive: \"{text}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn unreachable_renders_without_colour() {
        let report = json!({"exitCode": 2, "reasons": ["gateway unreachable"], "url": "http://127.0.0.1:1",
            "gateway": null, "probes": {"health": {"ok": false, "error": "connection refused"}}});
        let text = render(&report, false);
        assert!(text.starts_with("clawgate status: unreachable or failed (gateway unreachable)"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        assert!(!text.contains('\x1b'));
    }
}
