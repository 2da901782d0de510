//! The proof harness in short: `clawgate-proof` for 20 s over a small store against the debug
//! binaries, with every kind of fault (SIGKILL, SIGSTOP hang, heap and RSS overruns), a writer
//! and WebSocket dashboards. It must exit 0 (every target met) and print its JSON summary.
//!
//! Correctness, failures, closes and memory targets are the full run's. The latency targets are
//! looser because these are unoptimised binaries on a shared CI machine: they still catch a
//! gateway that stalls while the worker computes, while the release run in BENCHMARKS.md holds
//! the real ones (p99 5 ms, max 50 ms).

use std::process::Command;

use e2e::{bin, exclusive};
use serde_json::Value;

#[test]
fn a_short_proof_run_under_faults_meets_its_targets() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let bins = bin("clawgate").parent().expect("bin dir").to_path_buf();
    let out = Command::new(bin("clawgate-proof"))
        .arg("--store")
        .arg(dir.path().join("store"))
        .arg("--bin-dir")
        .arg(&bins)
        .args(["--duration", "20s", "--agents", "3", "--sessions", "8", "--turns", "10"])
        .args(["--clients", "6", "--call-every", "1s", "--reconnect-every", "6s"])
        .args(["--kill-every", "5s", "--hang-every", "15s", "--memory-every", "8s"])
        // clawgate's documented floor: below it the 80% heap budget may leave less room than
        // the worker's RSS outside the counted heap (~25-27 MiB in a debug build), and at
        // 128 MiB the RSS under an `alloc` fault peaked at 125-129 MiB, over the cap in one
        // run of five.
        .args(["--worker-memory-max", "256MiB", "--write-for", "3s", "--settle-deadline", "10s"])
        .args(["--final-settle-deadline", "30s"])
        .args(["--target-probe-p99", "25ms", "--target-probe-max", "500ms"])
        .output()
        .expect("run clawgate-proof");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no summary on stdout; stderr:\n{stderr}"));
    let summary: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {line}"));
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(0), "missed: {}\n{stderr}", summary["missed"]);
    assert_eq!(summary["targetsMet"], true);
    let faults = &summary["faults"];
    for kind in ["sigkill", "sigstop", "alloc", "rss"] {
        assert!(faults[kind].as_u64().unwrap() >= 1, "every kind of fault must be injected: {faults}");
    }
    let correctness = &summary["correctness"];
    assert_eq!(correctness["wrong"], 0, "{correctness}");
    assert!(correctness["checkedExact"].as_u64().unwrap() > 10, "{correctness}");
    assert!(correctness["appends"].as_u64().unwrap() > 10, "{correctness}");
    assert!(summary["ws"]["connects"].as_u64().unwrap() >= 6, "{}", summary["ws"]);
}
