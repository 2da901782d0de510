//! The real `fixtures/tiny/legacy` store (written by OpenClaw tooling) against its expected
//! oracle: all agents, all dates, UTC days.

use ipc_proto::Method;
use serde_json::Value;

use super::{ask, assert_close, engine, query, tiny_dir};

fn oracle() -> Value {
    let text = std::fs::read_to_string(tiny_dir().join("expected-oracle.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn usage_cost_matches_oracle() {
    let o = oracle();
    let mut e = engine(&tiny_dir());
    let (v, stats) = ask(&mut e, &query(Method::UsageCost));
    assert_eq!(stats.files_total, 6);
    assert_eq!(stats.lines_skipped, 0);
    let t = &v["totals"];
    for k in ["input", "output", "cacheRead", "cacheWrite", "totalTokens", "missingCostEntries"] {
        assert_eq!(t[k], o["totals"][k], "{k}");
    }
    for k in ["totalCost", "inputCost", "outputCost", "cacheReadCost", "cacheWriteCost"] {
        assert_close(t[k].as_f64().unwrap(), o["totals"][k].as_f64().unwrap());
    }
    let daily = v["daily"].as_array().unwrap();
    let mut seen = 0;
    for d in daily {
        let date = d["date"].as_str().unwrap();
        match o["daily"].get(date) {
            Some(exp) => {
                seen += 1;
                assert_eq!(d["totalTokens"], exp[0], "{date}");
                assert_close(d["totalCost"].as_f64().unwrap(), exp[1].as_f64().unwrap());
            }
            None => assert_eq!(d["totalTokens"], 0, "{date} should be empty"),
        }
    }
    assert_eq!(seen, o["daily"].as_object().unwrap().len());
    assert_eq!(v["cacheStatus"]["status"], "fresh");
}

#[test]
fn sessions_usage_matches_oracle() {
    let o = oracle();
    let mut e = engine(&tiny_dir());
    let (v, _) = ask(&mut e, &query(Method::SessionsUsage));
    let agg = &v["aggregates"];
    assert_eq!(agg["sessionCount"], 6);
    assert_eq!(v["sessions"].as_array().unwrap().len(), 6);
    assert_eq!(v["totals"]["totalTokens"], o["totals"]["totalTokens"]);
    assert_close(v["totals"]["totalCost"].as_f64().unwrap(), o["totals"]["totalCost"].as_f64().unwrap());
    let by_agent = agg["byAgent"].as_array().unwrap();
    assert_eq!(by_agent.len(), o["byAgent"].as_object().unwrap().len());
    for a in by_agent {
        let exp = &o["byAgent"][a["agentId"].as_str().unwrap()];
        assert_eq!(a["totals"]["totalTokens"], exp[0]);
        assert_close(a["totals"]["totalCost"].as_f64().unwrap(), exp[1].as_f64().unwrap());
    }
    let by_model = agg["byModel"].as_array().unwrap();
    assert_eq!(by_model.len(), o["byModel"].as_object().unwrap().len());
    for m in by_model {
        let name = format!("{}/{}", m["provider"].as_str().unwrap(), m["model"].as_str().unwrap());
        let exp = &o["byModel"][&name];
        assert_eq!(m["totals"]["totalTokens"], exp[0], "{name}");
        assert_close(m["totals"]["totalCost"].as_f64().unwrap(), exp[1].as_f64().unwrap());
        assert_eq!(m["count"], exp[2], "{name}");
    }
    // byModel is sorted by cost, descending.
    let costs: Vec<f64> = by_model.iter().map(|m| m["totals"]["totalCost"].as_f64().unwrap()).collect();
    assert!(costs.windows(2).all(|w| w[0] >= w[1]));
    let daily = agg["daily"].as_array().unwrap();
    assert_eq!(daily.len(), o["daily"].as_object().unwrap().len());
    for d in daily {
        let exp = &o["daily"][d["date"].as_str().unwrap()];
        assert_eq!(d["tokens"], exp[0]);
        assert_close(d["cost"].as_f64().unwrap(), exp[1].as_f64().unwrap());
    }
    // Messages: 24 user + 48 assistant; 24 toolResult messages count as tool results (2026.9).
    assert_eq!(agg["messages"]["user"], 24);
    assert_eq!(agg["messages"]["assistant"], 48);
    assert_eq!(agg["messages"]["total"], 72);
    assert_eq!(agg["messages"]["toolResults"], 24);
}

#[test]
fn sessions_usage_shape_matches_openclaw_2026_9() {
    let mut e = engine(&tiny_dir());
    let mut q = query(Method::SessionsUsage);
    q.limit = Some(2);
    let (v, _) = ask(&mut e, &q);
    let keys = |x: &Value| x.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let sample_top = [
        "aggregates",
        "cacheStatus",
        "creatorOptions",
        "diagnostics",
        "endDate",
        "sessions",
        "startDate",
        "totals",
        "updatedAt",
    ];
    let mut top = keys(&v);
    top.sort();
    assert_eq!(top, sample_top);
    // Rows cut to limit, aggregates over all rows (2026.9).
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(v["aggregates"]["sessionCount"], 6);
    let row = &v["sessions"][0];
    let mut rk = keys(row);
    rk.sort();
    assert_eq!(
        rk,
        [
            "agentId",
            "channel",
            "chatType",
            "creatorKey",
            "hasContextWeight",
            "key",
            "model",
            "modelProvider",
            "origin",
            "scope",
            "sessionId",
            "updatedAt",
            "usage"
        ]
    );
    let mut uk = keys(&row["usage"]);
    uk.sort();
    let mut expected = vec![
        "activityDates",
        "cacheRead",
        "cacheReadCost",
        "cacheWrite",
        "cacheWriteCost",
        "dailyBreakdown",
        "dailyLatency",
        "dailyMessageCounts",
        "dailyModelUsage",
        "durationMs",
        "firstActivity",
        "input",
        "inputCost",
        "lastActivity",
        "latency",
        "messageCounts",
        "missingCostEntries",
        "modelUsage",
        "output",
        "outputCost",
        "sessionFile",
        "sessionId",
        "toolUsage",
        "totalCost",
        "totalTokens",
        "utcQuarterHourMessageCounts",
        "utcQuarterHourTokenUsage",
    ];
    expected.sort();
    assert_eq!(uk, expected);
    let mut ak = keys(&v["aggregates"]);
    ak.sort();
    let mut expected = vec![
        "sessionCount",
        "longestSessionDurationMs",
        "messages",
        "tools",
        "byModel",
        "byProvider",
        "byAgent",
        "byChannel",
        "byCreator",
        "costDaily",
        "latency",
        "dailyLatency",
        "modelDaily",
        "daily",
    ];
    expected.sort();
    assert_eq!(ak, expected);
    // Rows are newest first.
    let u0 = v["sessions"][0]["updatedAt"].as_f64().unwrap();
    let u1 = v["sessions"][1]["updatedAt"].as_f64().unwrap();
    assert!(u0 >= u1);
    assert_eq!(v["sessions"][0]["creatorKey"], "[\"unknown\"]");
}

#[test]
fn key_query_and_unknown_key() {
    let mut e = engine(&tiny_dir());
    let mut q = query(Method::SessionsUsage);
    q.key = Some("agent:main:main".into());
    let (v, stats) = ask(&mut e, &q);
    assert_eq!(stats.files_total, 1);
    let rows = v["sessions"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["sessionId"], "6513270e-269e-4d37-b2a7-4de452e6b438");
    assert_eq!(v["totals"]["totalTokens"], 478_090);
    // A bare session id works too.
    q.key = Some("6513270e-269e-4d37-b2a7-4de452e6b438".into());
    let (v2, _) = ask(&mut e, &q);
    assert_eq!(v2["sessions"][0]["key"], "agent:main:main");
    // An unknown key is an empty answer, as OpenClaw gives.
    q.key = Some("agent:main:nope".into());
    let (v, _) = ask(&mut e, &q);
    assert_eq!(v["sessions"], serde_json::json!([]));
    assert_eq!(v["totals"]["totalTokens"], 0);
}

#[test]
fn agent_scope_and_day_offsets() {
    let mut e = engine(&tiny_dir());
    let mut q = query(Method::UsageCost);
    q.agents = ipc_proto::AgentScope::One("agent1".into());
    let (v, _) = ask(&mut e, &q);
    assert_eq!(v["totals"]["totalTokens"], 1_423_011);
    // A fixed offset moves entries between days but keeps totals.
    let mut q = query(Method::UsageCost);
    q.day_zone = ipc_proto::DayZone::FixedOffsetMinutes(-600);
    let (v, _) = ask(&mut e, &q);
    assert_eq!(v["totals"]["totalTokens"], 3_013_505);
    let sum: u64 = v["daily"].as_array().unwrap().iter().map(|d| d["totalTokens"].as_u64().unwrap()).sum();
    assert_eq!(sum, 3_013_505);
}

#[test]
fn timeseries_points() {
    let mut e = engine(&tiny_dir());
    let mut q = query(Method::SessionsUsageTimeseries);
    q.key = Some("agent:main:main".into());
    let (v, _) = ask(&mut e, &q);
    let pts = v["points"].as_array().unwrap();
    assert_eq!(pts.len(), 8);
    assert_eq!(pts.last().unwrap()["cumulativeTokens"], 478_090);
}

#[test]
fn logs_entries() {
    let mut e = engine(&tiny_dir());
    let mut q = query(Method::SessionsUsageLogs);
    q.key = Some("agent:main:main".into());
    q.limit = None;
    let (v, _) = ask(&mut e, &q);
    let logs = v["logs"].as_array().unwrap();
    assert!(!logs.is_empty());
    let ts: Vec<i64> = logs.iter().map(|l| l["timestamp"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "ascending");
    for l in logs {
        let role = l["role"].as_str().unwrap();
        assert!(["user", "assistant", "tool", "toolResult"].contains(&role), "{role}");
        assert!(l["content"].as_str().unwrap().chars().count() <= 2001);
        if l.get("tokens").is_some() {
            assert_eq!(role, "assistant");
        }
    }
    // The tokens of assistant entries add up to the timeseries' cumulative total.
    let tokens: u64 = logs.iter().filter_map(|l| l["tokens"].as_u64()).sum();
    assert_eq!(tokens, 478_090);
    // `limit` keeps the last entries.
    q.limit = Some(3);
    let (w, _) = ask(&mut e, &q);
    assert_eq!(w["logs"].as_array().unwrap()[..], logs[logs.len() - 3..]);
    q.key = None;
    assert!(super::try_ask(&mut e, &q).is_err(), "key is required");
}

#[test]
fn family_rows_merge_history_and_instance_rows_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("agents/main/sessions");
    std::fs::create_dir_all(&s).unwrap();
    let line = |ts: &str, input: u64| {
        format!(
            r#"{{"timestamp":"{ts}","message":{{"role":"assistant","provider":"p","model":"m","usage":{{"input":{input},"cost":{{"total":1}}}}}}}}"#
        ) + "\n"
    };
    std::fs::write(s.join("new.jsonl"), line("2026-11-02T00:00:00Z", 10)).unwrap();
    std::fs::write(s.join("old.jsonl.reset.2026-11-01T12-00-00Z"), line("2026-11-01T00:00:00Z", 5)).unwrap();
    std::fs::write(
        s.join("sessions.json"),
        r#"{"agent:main:main":{"sessionId":"new","updatedAt":5,"usageFamilySessionIds":["old","new"]}}"#,
    )
    .unwrap();
    let mut e = engine(dir.path());
    let (v, _) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2);
    let mut q = query(Method::SessionsUsage);
    q.group_by = ipc_proto::GroupBy::Family;
    let (v, _) = ask(&mut e, &q);
    let rows = v["sessions"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["scope"], "family");
    assert_eq!(rows[0]["includedSessionIds"], serde_json::json!(["new", "old"]));
    assert_eq!(rows[0]["historicalInstanceCount"], 2);
    assert_eq!(rows[0]["usage"]["input"], 15);
    assert_eq!(rows[0]["usage"]["activityDates"], serde_json::json!(["2026-11-01", "2026-11-02"]));
    // With a key, the family comes along too.
    q.key = Some("agent:main:main".into());
    let (v, _) = ask(&mut e, &q);
    assert_eq!(v["totals"]["input"], 15);
}

#[test]
fn cancellation_is_reported_and_recovers() {
    let mut e = engine(&tiny_dir());
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let err = e.answer(&query(Method::UsageCost), &cancel, &mut |_| {}).unwrap_err();
    assert_eq!(err.kind, ipc_proto::WorkerErrorKind::Cancelled);
    let (v, stats) = ask(&mut e, &query(Method::UsageCost));
    assert_eq!(v["totals"]["totalTokens"], 3_013_505);
    assert_eq!(stats.files_total, 6);
    let mut seen = Vec::new();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let mut fresh = engine(&tiny_dir());
    fresh.answer(&query(Method::UsageCost), &cancel, &mut |p| seen.push(p)).unwrap();
    let last = seen.last().unwrap();
    assert_eq!((last.files_done, last.files_total), (6, 6));
    assert!(last.bytes_done > 0);
}
