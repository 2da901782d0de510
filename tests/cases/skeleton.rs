//! The walking skeleton end to end: `clawgate serve` over a demo store, the worker as a separate
//! supervised child process, exact totals, survival of a worker SIGKILL, and malformed input.

use std::{io::Write as _, path::Path, time::Duration};

use e2e::{
    Gateway, HealthProbe, ProbeReport, alive, assert_money_eq, exclusive, http_agent, proc_stat,
    run_clawgate, wait_until,
};
use serde_json::{Value, json};

const TOKEN_FIELDS: [&str; 5] = ["input", "output", "cacheRead", "cacheWrite", "totalTokens"];
const COST_FIELDS: [&str; 5] = ["totalCost", "inputCost", "outputCost", "cacheReadCost", "cacheWriteCost"];

/// Writes a demo store with the real CLI and returns its manifest.
pub(crate) fn demo(dir: &Path, agents: u32, sessions: u32, turns: u32) -> Value {
    demo_seeded(dir, agents, sessions, turns, 7)
}

/// [`demo`] with a chosen seed (which decides, e.g., whether reset archives exist).
pub(crate) fn demo_seeded(dir: &Path, agents: u32, sessions: u32, turns: u32, seed: u64) -> Value {
    demo_with(dir, agents, sessions, turns, seed, &[])
}

/// [`demo_seeded`] with more `clawgate demo` flags (e.g. `--days`).
pub(crate) fn demo_with(
    dir: &Path,
    agents: u32,
    sessions: u32,
    turns: u32,
    seed: u64,
    extra: &[&str],
) -> Value {
    let out = dir.to_str().expect("utf-8 path");
    let (agents, sessions, turns, seed) =
        (agents.to_string(), sessions.to_string(), turns.to_string(), seed.to_string());
    let mut args = vec![
        "demo",
        "--out",
        out,
        "--agents",
        &agents,
        "--sessions",
        &sessions,
        "--messages",
        &turns,
        "--seed",
        &seed,
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run_clawgate(&args);
    assert_eq!(code, 0, "clawgate demo failed: {stdout}{stderr}");
    let manifest = std::fs::read_to_string(dir.join("clawgate-demo.json")).expect("manifest");
    serde_json::from_str(&manifest).expect("manifest JSON")
}

pub(crate) fn all_usage() -> Value {
    json!({"agentScope": "all", "range": "all", "limit": 100000})
}

pub(crate) fn assert_totals_eq(actual: &Value, expected: &Value) {
    for field in TOKEN_FIELDS {
        assert_eq!(actual[field], expected[field], "{field}: {actual} vs {expected}");
    }
    for field in COST_FIELDS {
        assert_money_eq(actual[field].as_f64().expect(field), expected[field].as_f64().expect(field), field);
    }
    assert_eq!(actual["missingCostEntries"], expected["missingCostEntries"]);
}

#[test]
fn demo_totals_are_exact_and_the_worker_is_a_separate_child() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 3, 6, 12);
    let gateway = Gateway::start(dir.path(), &store, &[], &[]);

    let worker_pid = gateway.ready_worker_pid();
    assert_ne!(worker_pid, gateway.pid(), "the worker must be its own process");
    let (ppid, _) = proc_stat(worker_pid).expect("worker in /proc");
    assert_eq!(ppid, gateway.pid(), "the worker's parent must be the gateway");

    let usage = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&usage["totals"], &manifest["totals"]);
    // One row per transcript: live sessions plus archived (reset) instances.
    let rows = manifest["sessions"].as_u64().unwrap() + manifest["archives"].as_u64().unwrap();
    assert_eq!(usage["sessions"].as_array().expect("sessions").len() as u64, rows);
    for (agent, totals) in manifest["byAgent"].as_object().expect("byAgent") {
        let row = usage["aggregates"]["byAgent"]
            .as_array()
            .expect("byAgent")
            .iter()
            .find(|r| r["agentId"] == agent.as_str())
            .unwrap_or_else(|| panic!("agent {agent} missing from byAgent"));
        assert_totals_eq(&row["totals"], totals);
    }

    let cost = gateway.call_ok("usage.cost", &json!({"agentScope": "all", "range": "all"}));
    assert_totals_eq(&cost["totals"], &manifest["totals"]);
    let daily_tokens: u64 =
        cost["daily"].as_array().expect("daily").iter().map(|d| d["totalTokens"].as_u64().unwrap()).sum();
    assert_eq!(daily_tokens, manifest["totals"]["totalTokens"].as_u64().unwrap());

    // The API refuses what it cannot answer, with OpenClaw's error shape.
    let (code, body) = gateway.call("no.such.method", &json!({}));
    assert_eq!(code, 400);
    assert_eq!(body["error"]["code"], "INVALID_REQUEST");
    assert_eq!(body["error"]["message"], "unknown method: no.such.method");
    let (code, body) = gateway.call("sessions.usage", &json!({"limit": 0}));
    assert_eq!(code, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("invalid sessions.usage params"));

    let (code, body) = gateway.get("/healthz");
    assert_eq!((code, body), (200, json!({"ok": true, "status": "live"})));
    let (code, body) = gateway.get("/readyz");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ready"], true);
}

#[test]
fn a_token_guards_everything_but_health() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 3);
    let gateway = Gateway::start(dir.path(), &store, &["--token", "s3cret"], &[]);
    assert_eq!(gateway.get("/healthz").0, 200);
    let (code, body) = gateway.get("/api/v1/status");
    assert_eq!(code, 401, "{body}");
    let (code, _) = gateway.call("sessions.usage", &json!({}));
    assert_eq!(code, 401);
    let agent = http_agent(Duration::from_secs(30));
    let res = agent
        .post(gateway.url("/api/v1/call/sessions.usage"))
        .header("authorization", "Bearer s3cret")
        .send("{}")
        .expect("POST");
    assert_eq!(res.status().as_u16(), 200);

    // And without a token, a public address is refused outright.
    let (code, _, stderr) =
        run_clawgate(&["serve", "--listen", "0.0.0.0:0", "--state-dir", store.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("without a token"), "{stderr}");
}

#[test]
fn sigkill_of_the_worker_never_reaches_health_and_it_comes_back() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 2, 4, 8);
    let gateway = Gateway::start(dir.path(), &store, &[], &[]);
    let gateway_pid = gateway.pid();
    let first_worker = gateway.ready_worker_pid();
    // Warm up the probe path before measuring.
    assert_eq!(gateway.get("/healthz").0, 200);

    let prober = HealthProbe::start(&gateway.base, Duration::from_millis(50));
    wait_until(Duration::from_millis(300), || None::<()>);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first_worker as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill worker");
    let second_worker = wait_until(Duration::from_secs(20), || {
        let status = gateway.status();
        let pid = status["worker"]["pid"].as_u64()? as u32;
        (pid != first_worker && status["worker"]["state"] == "ready").then_some(pid)
    })
    .expect("a new worker becomes ready");
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    // Keep probing a little after the restart, then stop.
    wait_until(Duration::from_millis(300), || None::<()>);
    let ProbeReport { count, failures, max } = prober.finish();

    assert!(count >= 30, "only {count} probes ran");
    assert!(
        failures.is_empty(),
        "health probes failed during the worker restart: {failures:?} (max {max:?})"
    );
    assert_ne!(second_worker, first_worker);
    assert!(!alive(first_worker), "the killed worker must be reaped");
    assert_eq!(proc_stat(second_worker).expect("new worker").0, gateway_pid);
    assert_eq!(gateway.pid(), gateway_pid);
    assert!(alive(gateway_pid));
    assert_totals_eq(&usage["totals"], &manifest["totals"]);
    let status = gateway.status();
    assert_eq!(status["gateway"]["pid"].as_u64(), Some(u64::from(gateway_pid)));
    assert_eq!(status["worker"]["restarts"], 1, "{status}");
    assert_eq!(status["worker"]["lastExit"]["cause"], "signal", "{status}");
    assert_eq!(status["worker"]["lastExit"]["signal"], 9, "{status}");
    eprintln!("health probes during worker SIGKILL: {count} probes, max {max:?}");
}

/// One assistant line with usage, as OpenClaw writes it.
pub(crate) fn assistant_line(ts: &str, input: u64, output: u64, cost: f64, pad: usize) -> String {
    json!({
        "type": "message", "id": "ffff0001", "parentId": null, "timestamp": ts,
        "message": {
            "role": "assistant", "provider": "anthropic", "model": "claude-sonnet-4-5", "api": "anthropic-messages",
            "content": [{"type": "text", "text": "x".repeat(pad)}],
            "usage": {"input": input, "output": output, "cacheRead": 0, "cacheWrite": 0, "totalTokens": input + output,
                      "cost": {"input": cost, "output": 0.0, "cacheRead": 0.0, "cacheWrite": 0.0, "total": cost}},
            "stopReason": "stop", "timestamp": 1_794_000_000_000u64
        }
    })
    .to_string()
}

#[test]
fn malformed_lines_are_counted_skips_and_totals_stay_exact() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 1, 3, 4);
    let sessions_dir = store.join("agents/main/sessions");
    let mut transcripts: Vec<_> = std::fs::read_dir(&sessions_dir)
        .expect("sessions dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    transcripts.sort();
    let ts = "2026-11-20T10:00:00.000Z";
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&transcripts[0]).expect("open");
        f.write_all(b"{\"type\":\"message\",\"message\":{\"role\":\"assistant\",\"usage\":{\"input\":5\n")
            .unwrap(); // broken JSON
        f.write_all(&[0xff, 0xfe, 0x01, 0x9c, b'{', b'\n']).unwrap(); // binary junk, invalid UTF-8
        f.write_all(b"\x00\x00\x00\n").unwrap(); // NUL bytes
        // A valid message several MB long: counted.
        f.write_all(assistant_line(ts, 1000, 2000, 0.25, 4 << 20).as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
        // A line longer than the 16 MiB limit: skipped without being held in memory.
        f.write_all(&vec![b'y'; 17 << 20]).unwrap();
        f.write_all(b"\n").unwrap();
    }
    {
        // An unterminated last line: not counted until its newline arrives.
        let mut f = std::fs::OpenOptions::new().append(true).open(&transcripts[1]).expect("open");
        f.write_all(assistant_line(ts, 7, 7, 1.0, 10).as_bytes()).unwrap();
    }
    let gateway = Gateway::start(dir.path(), &store, &[], &[]);
    gateway.ready_worker_pid();
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    let mut expected = manifest["totals"].clone();
    for (field, add) in [("input", 1000u64), ("output", 2000), ("totalTokens", 3000)] {
        expected[field] = json!(expected[field].as_u64().unwrap() + add);
    }
    for field in ["totalCost", "inputCost"] {
        expected[field] = json!(expected[field].as_f64().unwrap() + 0.25);
    }
    assert_totals_eq(&usage["totals"], &expected);
    let diagnostics = &usage["diagnostics"];
    assert_eq!(diagnostics["malformedJsonLines"], 1, "{diagnostics}");
    assert_eq!(diagnostics["invalidUtf8Lines"], 1, "{diagnostics}");
    assert_eq!(diagnostics["nulByteLines"], 1, "{diagnostics}");
    assert_eq!(diagnostics["oversizeLines"], 1, "{diagnostics}");
    assert_eq!(diagnostics["pendingTails"], 1, "{diagnostics}");

    // The unterminated line counts once its newline arrives, exactly once.
    std::fs::OpenOptions::new().append(true).open(&transcripts[1]).unwrap().write_all(b"\n").unwrap();
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    expected["input"] = json!(expected["input"].as_u64().unwrap() + 7);
    expected["output"] = json!(expected["output"].as_u64().unwrap() + 7);
    expected["totalTokens"] = json!(expected["totalTokens"].as_u64().unwrap() + 14);
    for field in ["totalCost", "inputCost"] {
        expected[field] = json!(expected[field].as_f64().unwrap() + 1.0);
    }
    assert_totals_eq(&usage["totals"], &expected);
    assert_eq!(usage["diagnostics"]["pendingTails"], 0);
}
