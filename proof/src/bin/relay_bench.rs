//! `clawgate-relay-bench`: what shield mode's relay adds to OpenClaw's traffic (issue 19).
//!
//! 1. Frames: a protocol-v4 client sends requests at a fixed rate (1,000/s by default) to an
//!    echo upstream in this process, which answers each at once; the same client runs directly
//!    against the upstream and through `clawgate serve --upstream`, in alternating phases
//!    (direct, relay, direct, relay), so drift in the machine's load hits both sides alike.
//!    Client and upstream share this process's clock, so each frame's latency is measured one
//!    way: client to upstream (the request), upstream to client (the answer).
//! 2. The Control UI: the real OpenClaw 2026.9.6 gateway (`tests/openclaw-gateway/start.mjs`) on
//!    a demo store, clawgate in front of it, and OpenClaw's own Control UI in Chromium
//!    (`tests/browser/control-ui.mjs --served-by-gateway`) loaded from each, alternately; the
//!    medians of its page load, time to `hello-ok` and Usage page time.
//!
//! Prints a table and one JSON line. Build with `cargo build --release --workspace --bins`.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tungstenite::{Message, protocol::Role};

#[derive(Debug, Parser)]
#[command(
    about = "Latency shield mode's relay adds: frames direct vs through clawgate, and OpenClaw's Control UI"
)]
struct Args {
    /// Requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds of frames per side (split into two phases each).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Control UI loads per side against the real OpenClaw gateway (0: skip that part).
    #[arg(long, default_value_t = 3)]
    control_ui_runs: u32,
    /// Where `clawgate` and `clawgate-usage-worker` are [default: beside this executable].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

/// One shared clock for the client and the upstream: nanoseconds since this.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// The echo upstream: OpenClaw's handshake, then a `res` for every request at once, carrying
/// when the request arrived and when the answer left (this process's clock).
struct Echo {
    addr: SocketAddr,
    /// Client-to-upstream latency of every request, by the `phase` the client names.
    arrivals: Arc<Mutex<Vec<(String, u64)>>>,
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start() -> anyhow::Result<Echo> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (Arc::clone(&arrivals), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let a = Arc::clone(&a);
                std::thread::spawn(move || {
                    let _ = echo_conn(stream, &a);
                });
            }
        });
        Ok(Echo { addr, arrivals, stop })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn echo_conn(stream: TcpStream, arrivals: &Mutex<Vec<(String, u64)>>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut key = None;
    let mut path = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if path.is_empty() {
            path = line.split(' ').nth(1).unwrap_or("/").to_owned();
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("sec-websocket-key") {
                key = Some(value.trim().to_owned());
            }
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut stream = stream;
    let Some(key) = key else {
        // clawgate's probe of `/readyz`.
        let body = r#"{"ready":true,"failing":[],"uptimeMs":1}"#;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    write!(
        stream,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )?;
    let early = reader.buffer().to_vec();
    let mut socket = tungstenite::WebSocket::from_partially_read(stream, early, Role::Server, None);
    let challenge =
        json!({"type": "event", "event": "connect.challenge", "payload": {"nonce": "n", "ts": 0}});
    socket.send(Message::text(challenge.to_string()))?;
    loop {
        let text = match socket.read()? {
            Message::Text(text) => text,
            Message::Close(_) => return Ok(()),
            _ => continue,
        };
        let arrived = now_ns();
        let frame: Value = serde_json::from_str(&text)?;
        let answer = if frame["method"] == "connect" {
            json!({"type": "res", "id": frame["id"], "ok": true, "payload": {"type": "hello-ok", "protocol": 4,
                "server": {"version": "echo"}, "auth": {"role": "operator", "scopes": ["operator.read"]}}})
        } else {
            let sent = frame["params"]["sentNs"].as_u64().unwrap_or(arrived);
            let phase = frame["params"]["phase"].as_str().unwrap_or("").to_owned();
            arrivals.lock().expect("arrivals").push((phase, arrived.saturating_sub(sent)));
            json!({"type": "res", "id": frame["id"], "ok": true, "payload": {"leftNs": now_ns(), "pad": "p".repeat(64)}})
        };
        socket.send(Message::text(answer.to_string()))?;
    }
}

/// A client connection that has done OpenClaw's handshake.
fn connect(
    url: &str,
) -> anyhow::Result<tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>> {
    let (mut socket, _) = tungstenite::connect(url).with_context(|| format!("connecting to {url}"))?;
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_mut() {
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    }
    let _challenge = socket.read()?;
    let connect = json!({"type": "req", "id": "c", "method": "connect", "params": {"minProtocol": 4, "maxProtocol": 4,
        "client": {"id": "cli", "version": "bench", "platform": "linux", "mode": "probe"}, "role": "operator",
        "scopes": ["operator.read"], "auth": {"token": "bench"}}});
    socket.send(Message::text(connect.to_string()))?;
    loop {
        if let Message::Text(text) = socket.read()? {
            let frame: Value = serde_json::from_str(&text)?;
            if frame["id"] == "c" {
                anyhow::ensure!(frame["ok"] == true, "connect refused: {frame}");
                return Ok(socket);
            }
        }
    }
}

/// One phase: `count` requests at `rate`; upstream-to-client latencies go into `down`.
fn phase(url: &str, name: &str, rate: u32, count: u64, down: &mut Histogram<u64>) -> anyhow::Result<u64> {
    let mut socket = connect(url)?;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now() + Duration::from_millis(100);
    let mut late = 0;
    for i in 0..count {
        let due = start + period * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > period {
            late += 1;
        }
        let id = format!("{name}-{i}");
        let request = json!({"type": "req", "id": id, "method": "bench.echo", "params": {"sentNs": now_ns(), "phase": name}});
        socket.send(Message::text(request.to_string()))?;
        loop {
            let Message::Text(text) = socket.read()? else { continue };
            let received = now_ns();
            let frame: Value = serde_json::from_str(&text)?;
            if frame["id"] == id.as_str() {
                let left = frame["payload"]["leftNs"].as_u64().unwrap_or(received);
                down.record(received.saturating_sub(left).max(1))?;
                break;
            }
        }
    }
    let _ = socket.close(None);
    Ok(late)
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    (h.value_at_quantile(q) as f64 / 100.0).round() / 10.0
}

fn row(label: &str, h: &Histogram<u64>) -> String {
    format!(
        "{label:<28} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1}  (n={})",
        us(h, 0.5),
        us(h, 0.9),
        us(h, 0.99),
        us(h, 0.999),
        h.max() as f64 / 1000.0,
        h.len()
    )
}

fn summary(h: &Histogram<u64>) -> Value {
    json!({"p50Us": us(h, 0.5), "p90Us": us(h, 0.9), "p99Us": us(h, 0.99), "p999Us": us(h, 0.999), "maxUs": h.max() as f64 / 1000.0, "n": h.len()})
}

/// A child process stopped on drop: SIGTERM (to its process group when `.1`, for OpenClaw's
/// node helpers; to clawgate alone, which stops its worker itself), SIGKILL after 10 s.
struct Proc(Child, bool);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        let group = nix::unistd::Pid::from_raw(if self.1 { -pid } else { pid });
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Spawns `command` in its own process group and returns it with its first stdout line that
/// `ready` accepts (within `deadline`).
fn spawn_until(
    mut command: Command,
    group: bool,
    deadline: Duration,
    ready: impl Fn(&str) -> bool,
) -> anyhow::Result<(Proc, String)> {
    use std::os::unix::process::CommandExt as _;
    if group {
        command.process_group(0);
    }
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let proc = Proc(child, group);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let end = Instant::now() + deadline;
    loop {
        let line = rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .context("no ready line in time")?;
        if ready(&line) {
            return Ok((proc, line));
        }
    }
}

fn clawgate(bins: &Path, work: &Path, state_dir: &Path, upstream: &str) -> anyhow::Result<(Proc, String)> {
    let mut command = Command::new(bins.join("clawgate"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream", upstream, "--state-dir"])
        .arg(state_dir)
        .arg("--data-dir")
        .arg(work.join("clawgate-data"))
        .env("CLAWGATE_WORKER_BIN", bins.join("clawgate-usage-worker"))
        .env("CLAWGATE_LOG", "warn")
        .stderr(Stdio::inherit());
    let (proc, line) =
        spawn_until(command, false, Duration::from_secs(30), |l| l.starts_with("clawgate listening on "))?;
    let base = line.trim_start_matches("clawgate listening on ").trim().to_owned();
    Ok((proc, base))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Control UI loads from OpenClaw directly and through clawgate, alternately.
fn control_ui(args: &Args, bins: &Path, work: &Path) -> anyhow::Result<Value> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("repo")?.to_owned();
    let store = work.join("store");
    let status = Command::new(bins.join("clawgate"))
        .args(["demo", "--out"])
        .arg(&store)
        .args(["--agents", "3", "--sessions", "20", "--seed", "7"])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "clawgate demo failed");
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut start = Command::new("node");
    start
        .arg(repo.join("tests/openclaw-gateway/start.mjs"))
        .arg("--store")
        .arg(&store)
        .args(["--port", &port.to_string(), "--token", "bench", "--deadline", "170", "--work"])
        .arg(work.join("openclaw"))
        .stderr(Stdio::inherit());
    eprintln!("starting OpenClaw 2026.9.6 on a 3 x 20 demo store (20-70 s)...");
    let (_openclaw, line) = spawn_until(start, true, Duration::from_secs(180), |l| l.starts_with('{'))?;
    let ready: Value = serde_json::from_str(&line)?;
    anyhow::ensure!(ready["ready"] == true, "OpenClaw did not start: {line}");
    let state_dir = PathBuf::from(ready["stateDir"].as_str().context("stateDir")?);
    let (_clawgate, base) = clawgate(bins, work, &state_dir, &format!("ws://127.0.0.1:{port}"))?;
    let direct = format!("ws://127.0.0.1:{port}");
    let shielded = base.replacen("http://", "ws://", 1);
    let mut timings: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    // One load of each first, not counted: both gateways fill their usage caches, and the
    // browser and the page cache warm up.
    for run in 0..(args.control_ui_runs + 1) * 2 {
        let (side, url) = if run % 2 == 0 { (0, &direct) } else { (1, &shielded) };
        let output = Command::new("node")
            .current_dir(repo.join("tests/browser"))
            .arg("control-ui.mjs")
            .args(["--gateway", url, "--token", "bench", "--served-by-gateway", "yes", "--deadline", "150"])
            .arg("--artifacts")
            .arg(work.join(format!("ui-{run}")))
            .stderr(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let report: Value =
            serde_json::from_str(text.lines().last().unwrap_or("")).context("control-ui.mjs report")?;
        if report["connected"] != true {
            bail!("the Control UI did not connect to {url}: {}", report["connect"]);
        }
        let counted = run >= 2;
        eprintln!(
            "control UI {} {}: {}",
            ["direct", "through clawgate"][side],
            if counted { format!("run {}", run / 2) } else { "warm-up".to_owned() },
            report["timings"]
        );
        if counted {
            timings[side].push(report["timings"].clone());
        }
    }
    let medians = |list: &[Value]| {
        let mut out = serde_json::Map::new();
        for key in ["load", "hello", "usage"] {
            let mut values: Vec<f64> = list.iter().filter_map(|t| t[key].as_f64()).collect();
            out.insert(format!("{key}Ms"), json!(median(&mut values)));
        }
        Value::Object(out)
    };
    Ok(json!({"runs": args.control_ui_runs, "direct": medians(&timings[0]), "shielded": medians(&timings[1]),
        "store": "clawgate demo --agents 3 --sessions 20 --seed 7", "openclaw": "2026.9.6"}))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    epoch();
    let bins = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?.parent().context("exe dir")?.to_owned(),
    };
    anyhow::ensure!(
        bins.join("clawgate").exists(),
        "no clawgate in {}: build the workspace first",
        bins.display()
    );
    let work = tempfile::tempdir()?;
    let store = work.path().join("frames-store");
    let status = Command::new(bins.join("clawgate"))
        .args(["demo", "--out"])
        .arg(&store)
        .args(["--agents", "1", "--sessions", "2"])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "clawgate demo failed");

    let echo = Echo::start()?;
    let (_clawgate, base) = clawgate(&bins, work.path(), &store, &format!("ws://{}", echo.addr))?;
    let direct_url = format!("ws://{}", echo.addr);
    let relay_url = base.replacen("http://", "ws://", 1);
    // Warm-up: connections, caches, the scheduler.
    phase(&direct_url, "warm", args.rate, u64::from(args.rate), &mut histogram())?;
    phase(&relay_url, "warm", args.rate, u64::from(args.rate), &mut histogram())?;
    let per_phase = u64::from(args.rate) * args.seconds / 2;
    let (mut down_direct, mut down_relay) = (histogram(), histogram());
    let mut late = [0u64; 2];
    eprintln!("frames: {} requests/s, {} s per side in alternating phases...", args.rate, args.seconds);
    for round in 0..2 {
        late[0] += phase(&direct_url, &format!("direct{round}"), args.rate, per_phase, &mut down_direct)?;
        late[1] += phase(&relay_url, &format!("relay{round}"), args.rate, per_phase, &mut down_relay)?;
    }
    let (mut up_direct, mut up_relay) = (histogram(), histogram());
    for (phase, ns) in echo.arrivals.lock().expect("arrivals").iter() {
        if phase.starts_with("direct") {
            up_direct.record((*ns).max(1))?;
        } else if phase.starts_with("relay") {
            up_relay.record((*ns).max(1))?;
        }
    }
    let added_up = us(&up_relay, 0.99) - us(&up_direct, 0.99);
    let added_down = us(&down_relay, 0.99) - us(&down_direct, 0.99);
    println!(
        "Relay latency per frame, {} frames/s each way, {} s per side (alternating phases), µs:",
        args.rate, args.seconds
    );
    println!("{:<28} {:>8} {:>8} {:>8} {:>8} {:>9}", "", "p50", "p90", "p99", "p99.9", "max");
    println!("{}", row("client→upstream direct", &up_direct));
    println!("{}", row("client→upstream via relay", &up_relay));
    println!("{}", row("upstream→client direct", &down_direct));
    println!("{}", row("upstream→client via relay", &down_relay));
    println!(
        "added p99: client→upstream {added_up:.1} µs, upstream→client {added_down:.1} µs (target ≤ 1000 µs); late sends direct {} relay {}",
        late[0], late[1]
    );

    let ui = if args.control_ui_runs > 0 {
        let ui = control_ui(&args, &bins, work.path())?;
        println!(
            "Control UI (OpenClaw 2026.9.6, demo 3 x 20), median of {} loads each, ms: direct load {} hello {} usage {}; through clawgate load {} hello {} usage {}",
            args.control_ui_runs,
            ui["direct"]["loadMs"],
            ui["direct"]["helloMs"],
            ui["direct"]["usageMs"],
            ui["shielded"]["loadMs"],
            ui["shielded"]["helloMs"],
            ui["shielded"]["usageMs"]
        );
        ui
    } else {
        Value::Null
    };
    let summary = json!({
        "rate": args.rate, "secondsPerSide": args.seconds,
        "clientToUpstream": {"direct": summary(&up_direct), "relay": summary(&up_relay), "addedP99Us": added_up},
        "upstreamToClient": {"direct": summary(&down_direct), "relay": summary(&down_relay), "addedP99Us": added_down},
        "lateSends": {"direct": late[0], "relay": late[1]},
        "targetMet": added_up <= 1000.0 && added_down <= 1000.0,
        "controlUi": ui,
    });
    println!("{summary}");
    Ok(())
}
