//! `clawgate report`: the same figures as the API, from a gateway and straight from a state
//! dir, for all agents unless asked; colour and the progress bar only on a terminal; the
//! documented exit codes; a report's own worker stopped without waiting for its reader.

use std::{
    io::Read as _,
    os::fd::{FromRawFd as _, OwnedFd},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use e2e::{Gateway, assert_money_eq, bin, exclusive};
use serde_json::{Value, json};

use crate::skeleton::{assert_totals_eq, demo};

const TOKEN: &str = "report-token";

/// `clawgate report` with `args`: no token, URL or data dir from the environment, the worker
/// built beside it, and `env` on top.
fn report_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(bin("clawgate"));
    command.arg("report").args(args);
    for var in ["CLAWGATE_TOKEN", "CLAWGATE_URL", "CLAWGATE_LISTEN", "CLAWGATE_DATA_DIR", "NO_COLOR"] {
        command.env_remove(var);
    }
    command.env("CLAWGATE_WORKER_BIN", bin("clawgate-usage-worker"));
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// Runs `clawgate report` with `args` (no token or URL from the environment): (code, stdout,
/// stderr).
fn report(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = report_command(args, env).output().expect("run clawgate report");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `clawgate report KIND ... --json`, which must succeed.
fn report_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, stdout, stderr) = report(&all, &[]);
    assert_eq!(code, 0, "report {args:?}: {stderr}{stdout}");
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(doc["schema"], "clawgate.report/v1", "{doc}");
    doc
}

/// The API's day rows that carry usage (the report leaves empty days out).
fn days_with_usage(payload: &Value) -> Vec<Value> {
    payload["daily"]
        .as_array()
        .expect("daily")
        .iter()
        .filter(|d| d["totalTokens"].as_u64() != Some(0) || d["totalCost"].as_f64() != Some(0.0))
        .cloned()
        .collect()
}

#[test]
fn reports_show_the_apis_figures_for_all_agents_from_a_gateway_and_from_the_store() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 3, 4, 3);
    let gateway = Gateway::start(dir.path(), &store, &["--token", TOKEN], &[]).with_token(TOKEN);
    gateway.ready_worker_pid();
    let url = gateway.base.as_str();
    let via = |kind: &str, extra: &[&str]| {
        let mut args = vec![kind, "--url", url, "--token", TOKEN, "--tz", "UTC"];
        args.extend_from_slice(extra);
        report_json(&args)
    };

    // Daily: the rows and totals of `usage.cost` over every agent, byte for byte.
    let api = gateway.call_ok("usage.cost", &json!({"agentScope": "all", "range": "all", "timeZone": "UTC"}));
    let daily = via("daily", &[]);
    assert_eq!(daily["totals"], api["totals"]);
    assert_eq!(daily["rows"].as_array().unwrap(), &days_with_usage(&api));
    assert_eq!(daily["params"]["agentScope"], "all", "{daily}");
    assert_totals_eq(&daily["totals"], &manifest["totals"]);
    // The trap the report avoids: `usage.cost` without a scope counts the default agent only.
    let one_agent = gateway.call_ok("usage.cost", &json!({"range": "all", "timeZone": "UTC"}));
    assert!(
        one_agent["totals"]["totalTokens"].as_u64() < daily["totals"]["totalTokens"].as_u64(),
        "{one_agent}"
    );

    // Weeks and months: their days summed, the totals the API's.
    for kind in ["weekly", "monthly"] {
        let doc = via(kind, &[]);
        assert_eq!(doc["totals"], api["totals"], "{kind}");
        let rows = doc["rows"].as_array().unwrap();
        assert!(!rows.is_empty(), "{doc}");
        let mut tokens = 0;
        for row in rows {
            let (from, to) = (row["startDate"].as_str().unwrap(), row["endDate"].as_str().unwrap());
            let days: Vec<&Value> = api["daily"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| (from..=to).contains(&d["date"].as_str().unwrap()))
                .collect();
            let sum = |field: &str| days.iter().map(|d| d[field].as_u64().unwrap()).sum::<u64>();
            assert_eq!(row["totalTokens"].as_u64(), Some(sum("totalTokens")), "{kind} {row}");
            assert_eq!(row["cacheRead"].as_u64(), Some(sum("cacheRead")), "{kind} {row}");
            let cost: f64 = days.iter().map(|d| d["totalCost"].as_f64().unwrap()).sum();
            assert_money_eq(row["totalCost"].as_f64().unwrap(), cost, kind);
            tokens += row["totalTokens"].as_u64().unwrap();
        }
        assert_eq!(Some(tokens), doc["totals"]["totalTokens"].as_u64(), "{kind}: rows add up to the total");
    }

    // Models and agents: `sessions.usage`'s aggregates and totals as they are.
    let usage = gateway.call_ok(
        "sessions.usage",
        &json!({"agentScope": "all", "range": "all", "limit": 1, "timeZone": "UTC"}),
    );
    let models = via("model", &[]);
    assert_eq!(models["rows"], usage["aggregates"]["byModel"]);
    assert_eq!(models["totals"], usage["totals"]);
    let agents = via("agent", &[]);
    assert_eq!(agents["rows"], usage["aggregates"]["byAgent"]);
    assert_eq!(agents["rows"].as_array().unwrap().len(), 3, "{agents}");
    assert_totals_eq(&agents["totals"], &manifest["totals"]);

    // Sessions: the most expensive first, cut to --limit, the total over all of them.
    let sessions = via("session", &["--limit", "3"]);
    let rows = sessions["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let all = gateway.call_ok(
        "sessions.usage",
        &json!({"agentScope": "all", "range": "all", "limit": 1000, "sortBy": "cost"}),
    );
    assert_eq!(sessions["rowsTotal"].as_u64(), Some(all["sessions"].as_array().unwrap().len() as u64));
    assert_eq!(sessions["totals"], usage["totals"]);
    for (row, api_row) in rows.iter().zip(all["sessions"].as_array().unwrap()) {
        assert_eq!(row["key"], api_row["key"]);
        assert_eq!(row["totalCost"], api_row["usage"]["totalCost"]);
        assert_eq!(row["totalTokens"], api_row["usage"]["totalTokens"]);
    }

    // One agent, and a range: the API's answer to the same params.
    let main = via("daily", &["--agent", "main"]);
    let api_main =
        gateway.call_ok("usage.cost", &json!({"agentId": "main", "range": "all", "timeZone": "UTC"}));
    assert_eq!(main["totals"], api_main["totals"]);
    assert_eq!(main["agent"], "main");
    let first = daily["rows"][0]["date"].as_str().unwrap().to_owned();
    let ranged = via("daily", &["--since", &first.replace('-', ""), "--until", &first]);
    let api_ranged = gateway.call_ok(
        "usage.cost",
        &json!({"agentScope": "all", "startDate": first, "endDate": first, "timeZone": "UTC"}),
    );
    assert_eq!(ranged["totals"], api_ranged["totals"]);
    assert_eq!(ranged["rows"].as_array().unwrap().len(), 1, "{ranged}");
    let until_only = via("daily", &["--until", &first]);
    assert_eq!(
        until_only["totals"], api_ranged["totals"],
        "--until alone starts at the first day with usage"
    );

    // Straight from the store through a worker of the command's own: the same document.
    let data = dir.path().join("report-data");
    let data = data.to_str().unwrap();
    let store_arg = store.to_str().unwrap();
    for (kind, from_gateway) in [("daily", &daily), ("agent", &agents), ("model", &models)] {
        let direct = report_json(&[kind, "--state-dir", store_arg, "--data-dir", data, "--tz", "UTC"]);
        assert_eq!(direct["totals"], from_gateway["totals"], "{kind}");
        assert_eq!(direct["rows"], from_gateway["rows"], "{kind}");
        assert_eq!(direct["source"]["stateDir"], store_arg, "{direct}");
    }
    // The rollups stay for the next report over the same store.
    assert!(std::fs::read_dir(Path::new(data).join("report")).unwrap().count() == 1);

    // Table and CSV say the same.
    let (code, table, _) = report(&["agent", "--url", url, "--token", TOKEN], &[]);
    assert_eq!(code, 0, "{table}");
    let total = table.lines().find(|l| l.starts_with("Total")).unwrap_or_else(|| panic!("{table}"));
    let tokens = agents["totals"]["totalTokens"].as_u64().unwrap();
    assert!(total.contains(&thousands(tokens)), "{total} vs {tokens}");
    let dollars = format!("${:.2}", agents["totals"]["totalCost"].as_f64().unwrap());
    assert!(total.ends_with(&dollars), "{total} vs {dollars}");
    let (code, csv, _) = report(&["agent", "--url", url, "--token", TOKEN, "--csv"], &[]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("agentId,input,output,cacheRead,cacheWrite,totalTokens,totalCost"), "{csv}");
    assert_eq!(lines.len(), 4, "a header and three agents: {csv}");
    let first_row = &agents["rows"][0];
    assert!(lines[1].starts_with(&format!("{},", first_row["agentId"].as_str().unwrap())), "{csv}");
    assert!(lines[1].contains(&first_row["totals"]["totalCost"].to_string()), "exact figures: {csv}");

    // Exit codes: unauthorized, usage errors.
    let (code, _, stderr) = report(&["daily", "--url", url, "--token", "wrong"], &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("unauthorized (HTTP 401)"), "{stderr}");
    let (code, _, stderr) = report(&["daily", "--url", url, "--token", TOKEN, "--since", "2026-13-01"], &[]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = report(&["daily", "--url", url, "--token", TOKEN, "--tz", "Mars/Olympus"], &[]);
    assert_eq!(code, 2, "{stderr}");
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn nothing_to_ask_is_reported_with_its_own_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, _, stderr) = report(&["daily", "--url", &format!("127.0.0.1:{port}"), "--timeout", "5s"], &[]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("cannot reach the gateway") && stderr.contains("--state-dir"), "{stderr}");
    let missing = dir.path().join("no-such-dir");
    let (code, _, stderr) = report(&["daily", "--state-dir", missing.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");

    // A directory that is not an OpenClaw state dir: zeros, and a warning that says so.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let data = dir.path().join("data");
    let (code, stdout, stderr) = report(
        &["daily", "--state-dir", empty.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--json"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let warning = format!("no OpenClaw agents found in {}", empty.display());
    assert!(doc["warnings"][0].as_str().unwrap().starts_with(&warning), "{doc}");
    assert!(stderr.contains(&warning), "{stderr}");
    assert_eq!(doc["totals"]["totalTokens"], 0);
}

/// A pseudo-terminal: (the side we read, the side the child writes to).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors into the pointers; no name, termios or
    // window size is passed.
    let rc = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Runs `clawgate report` with stdout or stderr (or both) on a terminal; returns (code, what
/// the terminal got, what the pipe got). Reading stops when the child has exited and closed
/// the terminal, or after 60 s.
fn report_on_terminal(
    args: &[&str],
    env: &[(&str, &str)],
    stdout_tty: bool,
    stderr_tty: bool,
) -> (i32, String, String) {
    let (master, slave) = pty();
    let mut command = report_command(args, env);
    command.stdin(Stdio::null());
    command.stdout(if stdout_tty { Stdio::from(slave.try_clone().unwrap()) } else { Stdio::piped() });
    command.stderr(if stderr_tty { Stdio::from(slave.try_clone().unwrap()) } else { Stdio::piped() });
    let mut child = command.spawn().expect("spawn clawgate report");
    // Our copies of the terminal's child side (the command keeps its Stdio until dropped): the
    // reader sees the end only when no process holds it any more.
    drop(command);
    drop(slave);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut terminal = std::fs::File::from(master);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the child's side is closed: the end of its output.
        while let Ok(n) = terminal.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(got);
    });
    let mut piped = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut piped).unwrap();
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut piped).unwrap();
    }
    let status = child.wait().expect("wait");
    let terminal = rx.recv_timeout(Duration::from_secs(60)).expect("the terminal side closes");
    (status.code().unwrap_or(-1), String::from_utf8_lossy(&terminal).into_owned(), piped)
}

#[test]
fn colour_and_the_progress_bar_only_on_a_terminal() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 2, 3, 3);
    let store = store.to_str().unwrap();
    let data = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    // A cold read with stderr on a terminal: the bar is drawn there, and cleared.
    let cold = data("cold");
    let args = ["daily", "--state-dir", store, "--data-dir", &cold, "--tz", "UTC"];
    let (code, terminal, stdout) = report_on_terminal(&args, &[], false, true);
    assert_eq!(code, 0, "{terminal}{stdout}");
    assert!(terminal.contains("reading transcripts [") && terminal.contains(" files"), "{terminal:?}");
    assert!(terminal.ends_with("\r\x1b[2K"), "the bar is erased at the end: {terminal:?}");
    assert!(stdout.contains("Total "), "{stdout}");
    assert!(!stdout.contains('\x1b'), "no colour into a pipe: {stdout:?}");

    // Stderr into a pipe: no bar, nothing but what the report says.
    let (code, stdout, stderr) =
        report(&["daily", "--state-dir", store, "--data-dir", &data("cold2"), "--tz", "UTC"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("reading transcripts") && !stderr.contains('\x1b'), "{stderr:?}");
    assert!(!stdout.contains('\x1b'), "{stdout:?}");

    // Stdout on a terminal: colour, unless NO_COLOR.
    let (code, terminal, _) = report_on_terminal(&args, &[], true, false);
    assert_eq!(code, 0, "{terminal}");
    assert!(terminal.contains("\x1b[1;33mTotal"), "a coloured totals row: {terminal:?}");
    let (code, terminal, _) = report_on_terminal(&args, &[("NO_COLOR", "1")], true, false);
    assert_eq!(code, 0, "{terminal}");
    assert!(terminal.contains("Total") && !terminal.contains('\x1b'), "{terminal:?}");
}

/// The live processes whose parent is `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| e2e::proc_stat(*pid).is_some_and(|(ppid, _)| ppid == parent) && e2e::alive(*pid))
        .collect()
}

/// A report straight from a store tells its worker to stop once it has the answer, and writes
/// the answer meanwhile: the worker (which finishes a cold read's index on its way out) is gone
/// even while nobody reads the report yet, and the report waits only for its reader.
#[test]
fn a_reports_worker_stops_while_its_output_waits_for_a_reader() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 2, 150, 3);
    let data = dir.path().join("data");
    let (store_arg, data_arg) = (store.to_str().unwrap(), data.to_str().unwrap());
    let args = [
        "session",
        "--limit",
        "100000",
        "--json",
        "--tz",
        "UTC",
        "--state-dir",
        store_arg,
        "--data-dir",
        data_arg,
    ];
    let mut command = report_command(&args, &[]);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    // Killed if the test ends early; its worker follows its parent.
    let mut report = e2e::Reaped(command.spawn().expect("spawn clawgate report"));
    let pid = report.id();
    let mut stdout = report.stdout.take().expect("stdout");
    // The first byte: the answer is in, and the rest (far more than a pipe holds) waits.
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("the report starts writing");
    let stopped = e2e::wait_until(Duration::from_secs(60), || children_of(pid).is_empty().then_some(()));
    assert!(
        stopped.is_some(),
        "the worker {:?} still runs while the report waits for its reader",
        children_of(pid)
    );
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read the report");
    let status = report.wait().expect("wait");
    assert!(status.success(), "{status}");
    let text = format!("{}{rest}", first[0] as char);
    assert!(text.len() > 128 << 10, "the report outgrows a pipe: {} bytes", text.len());
    let doc: Value = serde_json::from_str(&text).expect("one JSON document");
    assert!(doc["rows"].as_array().is_some_and(|rows| rows.len() >= 300), "a row per session at least");
    assert_totals_eq(&doc["totals"], &manifest["totals"]);
}
