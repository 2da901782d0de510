//! `clawgate status` always answers within its deadline, with the right exit code and JSON,
//! whatever state the gateway is in.

use std::{
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use e2e::{Gateway, bin, exclusive};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use crate::skeleton::demo;

/// Runs `clawgate status --json` (plus `extra`) and returns (exit code, report, elapsed).
fn status(url: &str, extra: &[&str]) -> (i32, Value, Duration) {
    let started = Instant::now();
    let out = Command::new(bin("clawgate"))
        .args(["status", "--json", "--url", url])
        .args(extra)
        .env_remove("CLAWGATE_TOKEN")
        .output()
        .expect("run clawgate status");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    (out.status.code().unwrap_or(-1), report, took)
}

fn assert_schema(report: &Value, code: i32) {
    assert_eq!(report["schema"], "clawgate.status/v1", "{report}");
    assert_eq!(report["exitCode"], code, "{report}");
    assert_eq!(report["ok"], code == 0, "{report}");
    for key in ["url", "reasons", "gateway", "worker", "probes"] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    assert!(report["probes"]["health"]["ms"].is_number(), "{report}");
}

const DEADLINE: &[&str] = &["--timeout", "2s"];
const LIMIT: Duration = Duration::from_millis(2500);

#[test]
fn a_healthy_gateway_reports_ok_and_deep_probes_pass() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    let gateway = Gateway::start(dir.path(), &store, &[], &[]);
    gateway.ready_worker_pid();
    let (code, report, took) = status(&gateway.base, &["--deep"]);
    assert_eq!(code, 0, "{report}");
    assert_schema(&report, 0);
    assert!(took < Duration::from_secs(5));
    for probe in ["health", "status", "websocket", "workerPing", "usage", "socket"] {
        assert_eq!(report["probes"][probe]["ok"], true, "{probe}: {report}");
    }
    assert_eq!(report["worker"]["state"], "ready");
    assert!(report["systemd"].is_object(), "{report}");
    // The deep usage probe ran a job: the next report shows its duration and what it saw.
    let (_, report, _) = status(&gateway.base, &[]);
    assert!(report["jobs"]["recent"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["jobs"]["p99Ms"].is_number(), "{report}");
    assert_eq!(report["stores"]["agents"], 1, "{report}");
    assert!(report["stores"]["files"].as_u64().unwrap() >= 2, "{report}");

    // The text form says the same, without colour when not on a terminal.
    let out = Command::new(bin("clawgate")).args(["status", "--url", &gateway.base]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("clawgate status: ok"), "{text}");
    assert!(text.contains("Worker    ready (managed)"), "{text}");
    assert!(text.contains("Jobs      p50 "), "{text}");
    assert!(text.contains("Stores    1 agents"), "{text}");
    assert!(!text.contains('\x1b'), "{text}");
}

#[test]
fn nothing_listening_is_unreachable_at_once() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (code, report, took) = status(&format!("http://127.0.0.1:{port}"), DEADLINE);
    assert_eq!(code, 2);
    assert_schema(&report, 2);
    assert!(took < LIMIT, "{took:?}");
    assert!(report["probes"]["health"]["error"].as_str().unwrap().contains("refused"), "{report}");
}

#[test]
fn a_port_that_accepts_but_never_answers_times_out_within_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accept connections and hold them open without a byte of answer.
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let (code, report, took) = status(&url, &["--timeout", "2s", "--deep"]);
    assert_eq!(code, 2, "{report}");
    assert_schema(&report, 2);
    assert!(took < LIMIT, "{took:?}");
    assert!(report["probes"]["health"]["error"].as_str().unwrap().contains("timed out"), "{report}");
    drop(holder);
}

#[test]
fn a_stopped_gateway_times_out_and_a_hung_worker_is_reported() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    // A slow heartbeat so the stopped worker stays the current one while we look.
    let gateway = Gateway::start(dir.path(), &store, &["--worker-heartbeat", "10s"], &[]);
    let worker = gateway.ready_worker_pid();

    // A hung worker: the gateway answers, the deep probes that need the worker fail in time.
    kill(Pid::from_raw(worker as i32), Signal::SIGSTOP).unwrap();
    let (code, report, took) = status(&gateway.base, &["--timeout", "3s", "--deep"]);
    kill(Pid::from_raw(worker as i32), Signal::SIGCONT).unwrap();
    assert_eq!(code, 1, "{report}");
    assert_schema(&report, 1);
    assert!(took < Duration::from_millis(3500), "{took:?}");
    assert_eq!(report["probes"]["health"]["ok"], true);
    assert_eq!(report["probes"]["workerPing"]["ok"], false, "{report}");

    // A stopped gateway: every probe times out, the command does not.
    kill(Pid::from_raw(gateway.pid() as i32), Signal::SIGSTOP).unwrap();
    let (code, report, took) = status(&gateway.base, &["--timeout", "2s", "--deep"]);
    kill(Pid::from_raw(gateway.pid() as i32), Signal::SIGCONT).unwrap();
    assert_eq!(code, 2, "{report}");
    assert_schema(&report, 2);
    assert!(took < LIMIT, "{took:?}");
}
