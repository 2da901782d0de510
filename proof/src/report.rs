//! The verdict: one JSON summary line (stdout), a human table (stderr), and the targets.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// The targets for this machine class.
#[derive(Debug, Clone)]
pub struct Targets {
    pub probe_p99_ms: f64,
    pub probe_max_ms: f64,
    pub gateway_rss_bytes: u64,
    pub worker_cap_bytes: u64,
}

/// `{count, p50Ms, p99Ms, maxMs}` of a µs histogram.
pub fn latency(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return json!({"count": 0, "p50Ms": null, "p99Ms": null, "maxMs": null});
    }
    json!({
        "count": h.len(),
        "p50Ms": ms(h.value_at_quantile(0.50)),
        "p99Ms": ms(h.value_at_quantile(0.99)),
        "maxMs": ms(h.max()),
    })
}

/// Worker restarts that no injected fault explains: causes are matched to the faults that
/// produce them (SIGKILL → `signal`/`connection_lost`, SIGSTOP → `hang`, `rss:` → `rss_cap`/
/// `oom_kill`); any other cause, or more of one than was injected, is unexpected.
pub fn unexpected_exits(by_cause: &BTreeMap<String, u64>, kills: u64, hangs: u64, rss: u64) -> u64 {
    let mut buckets = [0u64; 3];
    let mut other = 0;
    for (cause, n) in by_cause {
        match cause.as_str() {
            "signal" | "connection_lost" => buckets[0] += n,
            "hang" => buckets[1] += n,
            "rss_cap" | "oom_kill" => buckets[2] += n,
            _ => other += n,
        }
    }
    other
        + [kills, hangs, rss]
            .iter()
            .zip(buckets)
            .map(|(injected, seen)| seen.saturating_sub(*injected))
            .sum::<u64>()
}

/// Lists every missed target (empty: all met).
pub fn missed(s: &Value, t: &Targets) -> Vec<String> {
    let mut missed = Vec::new();
    let num = |v: &Value| v.as_f64().unwrap_or(f64::INFINITY);
    let count = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
    let p = &s["probes"];
    if num(&p["p99Ms"]) > t.probe_p99_ms {
        missed.push(format!("probe p99 {} ms > {} ms", p["p99Ms"], t.probe_p99_ms));
    }
    if num(&p["maxMs"]) > t.probe_max_ms {
        missed.push(format!("probe max {} ms > {} ms", p["maxMs"], t.probe_max_ms));
    }
    if count(&p["failures"]) > 0 {
        missed.push(format!("{} failed probes", p["failures"]));
    }
    let ws = &s["ws"];
    if count(&ws["unexpectedCloses"]) > 0 {
        missed.push(format!("{} unexpected WebSocket closes", ws["unexpectedCloses"]));
    }
    if count(&ws["connectFailures"]) > 0 {
        missed.push(format!("{} failed WebSocket connects", ws["connectFailures"]));
    }
    let u = &s["usage"];
    if count(&u["failures"]) > 0 {
        missed.push(format!("{} usage calls failed (not explained by injected faults)", u["failures"]));
    }
    let c = &s["correctness"];
    if count(&c["wrong"]) > 0 {
        missed.push(format!("{} wrong answers", c["wrong"]));
    }
    if count(&c["checkedExact"]) == 0 {
        missed.push("no answer could be checked exactly".into());
    }
    if c["finalSettle"]["converged"] != true {
        missed.push("the answers did not reach the exact final totals after the faults stopped".into());
    }
    let g = &s["gateway"];
    if count(&g["peakRssBytes"]) > t.gateway_rss_bytes {
        missed.push(format!("gateway peak RSS {} bytes > {} bytes", g["peakRssBytes"], t.gateway_rss_bytes));
    }
    let w = &s["worker"];
    if count(&w["peakRssBytes"]) > t.worker_cap_bytes {
        missed.push(format!(
            "worker peak RSS {} bytes > its cap {} bytes",
            w["peakRssBytes"], t.worker_cap_bytes
        ));
    }
    // The heap budget refuses an `alloc:` overrun at 80% of the cap: RSS must stay within it.
    if count(&w["allocFaultPeakRssBytes"]) > t.worker_cap_bytes {
        missed.push(format!(
            "worker peak RSS under an alloc fault {} bytes > its cap {} bytes",
            w["allocFaultPeakRssBytes"], t.worker_cap_bytes
        ));
    }
    if count(&w["unexpectedExits"]) > 0 {
        missed.push(format!("{} worker exits not caused by injected faults", w["unexpectedExits"]));
    }
    let f = &s["faults"];
    if count(&f["hangsUndetected"]) > 0 {
        missed.push(format!("{} hangs not detected by the supervisor", f["hangsUndetected"]));
    }
    if f["unexpectedOutcomes"].as_array().is_some_and(|a| !a.is_empty()) {
        missed.push("faults not handled as expected (see faults.unexpectedOutcomes)".into());
    }
    missed
}

fn mb(bytes: &Value) -> String {
    bytes.as_u64().map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64))
}

fn lat(v: &Value) -> String {
    if v["count"] == 0 {
        return "-".into();
    }
    format!("n {}  p50 {} ms  p99 {} ms  max {} ms", v["count"], v["p50Ms"], v["p99Ms"], v["maxMs"])
}

/// The human table.
pub fn table(s: &Value) -> String {
    let p = &s["probes"];
    let ws = &s["ws"];
    let u = &s["usage"];
    let c = &s["correctness"];
    let w = &s["worker"];
    let f = &s["faults"];
    let rows: Vec<(&str, String)> = vec![
        (
            "run",
            format!(
                "{} s, store {} ({} files, {} bytes)",
                s["durationS"], s["store"]["shape"], s["store"]["files"], s["store"]["bytes"]
            ),
        ),
        ("/healthz probes", format!("{}  failures {}", lat(p), p["failures"])),
        (
            "WebSocket clients",
            format!(
                "{} clients, {} connects, {} unexpected closes, {} connect failures",
                ws["clients"], ws["connects"], ws["unexpectedCloses"], ws["connectFailures"]
            ),
        ),
        (
            "usage calls",
            format!(
                "{} ok ({} stale), {} fault-expected errors, {} failures",
                u["ok"], u["stale"], u["faultErrors"], u["failures"]
            ),
        ),
        ("usage latency cold", lat(&u["cold"])),
        ("usage latency warm", lat(&u["warm"])),
        (
            "answers checked",
            format!("{} ({} exactly), {} wrong", c["checked"], c["checkedExact"], c["wrong"]),
        ),
        ("appends", format!("{} turns, {} tokens", c["appends"], c["appendedTokens"])),
        (
            "settles",
            format!(
                "{} converged, {} timed out; {}",
                c["settles"]["converged"],
                c["settles"]["timedOut"],
                lat(&c["settles"]["took"])
            ),
        ),
        (
            "final settle",
            format!("converged {} in {} ms", c["finalSettle"]["converged"], c["finalSettle"]["ms"]),
        ),
        (
            "faults injected",
            format!(
                "SIGKILL {} (+{} skipped: no worker), SIGSTOP {} ({} continued from outside), alloc {} ({} refused), rss {} ({} killed), {} taken by another fault first, {} past the deadline, {} not sent (worker never idle); {} slots skipped while a fault was being handled",
                f["sigkill"],
                f["sigkillSkipped"],
                f["sigstop"],
                f["hangsContinued"].as_array().map_or(0, Vec::len),
                f["alloc"],
                f["allocRefused"],
                f["rss"],
                f["rssKilled"],
                f["memoryInterrupted"],
                f["memoryDelayed"],
                f["memorySkipped"],
                f["deferred"]
            ),
        ),
        (
            "worker restarts",
            format!(
                "{} by cause {}, unexpected {}",
                w["restarts"], w["restartsByCause"], w["unexpectedExits"]
            ),
        ),
        (
            "peak RSS",
            format!(
                "gateway {}, worker {} (cap {}), under alloc faults {}, pushed by rss faults {}",
                mb(&s["gateway"]["peakRssBytes"]),
                mb(&w["peakRssBytes"]),
                mb(&w["capBytes"]),
                mb(&w["allocFaultPeakRssBytes"]),
                mb(&w["rssFaultPeakBytes"])
            ),
        ),
        (
            "gateway runtime",
            format!(
                "lag (its own 10 ms sampler, worst 30 s window) p99 {} ms, max {} ms; CPU up to {} cores",
                s["gateway"]["runtimeLagWorstP99Ms"],
                s["gateway"]["runtimeLagMaxMs"],
                s["gateway"]["cpuCoreRatioMax"]
            ),
        ),
        (
            "targets",
            if s["targetsMet"] == true { "all met".to_owned() } else { format!("MISSED: {}", s["missed"]) },
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_explained_by_the_faults_that_cause_them() {
        let causes = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(unexpected_exits(&causes(&[("signal", 3), ("hang", 1), ("rss_cap", 1)]), 3, 1, 1), 0);
        assert_eq!(unexpected_exits(&causes(&[("signal", 4)]), 3, 0, 0), 1);
        assert_eq!(unexpected_exits(&causes(&[("crash", 1), ("signal", 1)]), 3, 0, 0), 1);
    }

    #[test]
    fn a_clean_summary_meets_every_target() {
        let t = Targets {
            probe_p99_ms: 5.0,
            probe_max_ms: 50.0,
            gateway_rss_bytes: 50_000_000,
            worker_cap_bytes: 1 << 29,
        };
        let mut s = json!({
            "probes": {"p99Ms": 1.2, "maxMs": 9.0, "failures": 0},
            "ws": {"unexpectedCloses": 0, "connectFailures": 0},
            "usage": {"failures": 0},
            "correctness": {"wrong": 0, "checkedExact": 5, "finalSettle": {"converged": true}},
            "gateway": {"peakRssBytes": 20_000_000},
            "worker": {"peakRssBytes": 100_000_000, "allocFaultPeakRssBytes": 400_000_000, "unexpectedExits": 0},
            "faults": {"hangsUndetected": 0, "unexpectedOutcomes": []},
        });
        assert!(missed(&s, &t).is_empty(), "{:?}", missed(&s, &t));
        s["probes"]["p99Ms"] = json!(7.5);
        s["correctness"]["wrong"] = json!(2);
        assert_eq!(missed(&s, &t).len(), 2);
    }
}
