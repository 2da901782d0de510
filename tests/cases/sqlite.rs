//! OpenClaw 2026.7+ stores (one SQLite database per agent) through the real binaries: the demo
//! generator's SQLite layout answers with the same exact totals as its legacy layout.

use e2e::{Gateway, exclusive, run_clawgate};
use serde_json::{Value, json};

use crate::skeleton::{all_usage, assert_totals_eq};

#[test]
fn a_sqlite_store_gives_the_generators_exact_totals() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let out = store.to_str().unwrap();
    let (code, stdout, stderr) = run_clawgate(&[
        "demo",
        "--out",
        out,
        "--agents",
        "2",
        "--sessions",
        "4",
        "--messages",
        "6",
        "--seed",
        "11",
        "--layout",
        "sqlite",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("converted to the SQLite layout"), "{stdout}");
    for agent in ["main", "agent1"] {
        assert!(store.join(format!("agents/{agent}/agent/openclaw-agent.sqlite")).is_file());
    }
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("clawgate-demo.json")).unwrap()).unwrap();

    let gateway = Gateway::start(dir.path(), &store, &[], &[]);
    gateway.ready_worker_pid();
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&usage["totals"], &manifest["totals"]);
    let session_file = usage["sessions"][0]["usage"]["sessionFile"].as_str().unwrap_or("");
    assert!(session_file.starts_with("sqlite:"), "{session_file}");
    let cost = gateway.call_ok("usage.cost", &json!({"agentScope": "all", "range": "all"}));
    assert_totals_eq(&cost["totals"], &manifest["totals"]);
}
