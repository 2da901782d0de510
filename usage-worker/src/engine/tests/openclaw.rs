//! OpenClaw 2026.9.6's answer semantics where they are easy to get wrong (issue 18), on small
//! stores written here: a message without usage keeps its day and quarter hour (zero tokens), a
//! session without activity in range omits the dated arrays and does not count in
//! `sessionCount`, `cachedFiles` differs between `sessions.usage` (files the range lists) and
//! `usage.cost` (the scope), an unbounded `usage.cost` lists only days with usage, group
//! sessions get `<channel>:g-<peer>`, internal channels have no channel, legacy keys get their
//! agent, and logs render tool results as `loadSessionLogs` does.

use std::fs;
use std::path::Path;

use ipc_proto::Method;
use serde_json::{Value, json};

use super::{ask, engine, query};

/// 2026-11-10T00:00:00Z
const DAY2: i64 = 1_794_268_800_000;
/// 2026-11-05T00:00:00Z
const NOV5: i64 = DAY2 - 5 * 86_400_000;

fn line(v: Value) -> String {
    format!("{v}\n")
}

fn user(ts: &str, text: &str) -> String {
    line(
        json!({"type":"message","timestamp":ts,"message":{"role":"user","content":[{"type":"text","text":text}]}}),
    )
}

fn assistant(ts: &str, tokens: u64) -> String {
    line(
        json!({"type":"message","timestamp":ts,"message":{"role":"assistant","content":[{"type":"text","text":"  done  "}],
        "provider":"openai","model":"gpt-5",
        "usage":{"input":tokens,"output":1,"cacheRead":0,"cacheWrite":0,"totalTokens":tokens + 1,"cost":{"total":0.5}}}}),
    )
}

fn tool_result(ts: &str) -> String {
    line(
        json!({"type":"message","timestamp":ts,"message":{"role":"toolResult","toolName":"exec","content":[{"type":"text","text":"ok"}]}}),
    )
}

/// Three sessions of `main`: `s1` asks at 23:50 on 2026-11-09 and is answered at 00:10 the next
/// day; `s2` (a webchat group) is active on 2026-11-12; `s3` (a legacy `cron:` key) only on
/// 2026-11-01.
fn store(dir: &Path) {
    let sessions = dir.join("agents/main/sessions");
    fs::create_dir_all(&sessions).unwrap();
    let s1 = user("2026-11-09T23:50:00.000Z", "hi")
        + &assistant("2026-11-10T00:10:00.000Z", 100)
        + &tool_result("2026-11-10T00:11:00.000Z");
    fs::write(sessions.join("s1.jsonl"), s1).unwrap();
    fs::write(
        sessions.join("s2.jsonl"),
        user("2026-11-12T09:00:00.000Z", "yo") + &assistant("2026-11-12T09:01:00.000Z", 10),
    )
    .unwrap();
    fs::write(
        sessions.join("s3.jsonl"),
        user("2026-11-01T09:00:00.000Z", "old") + &assistant("2026-11-01T09:01:00.000Z", 7),
    )
    .unwrap();
    let entries = json!({
        "agent:main:slack:direct:u1": {"sessionId": "s1", "updatedAt": 3, "channel": "slack", "chatType": "direct"},
        "agent:main:webchat:group:g6": {"sessionId": "s2", "updatedAt": 2, "channel": "webchat", "chatType": "group",
            "origin": {"provider": "webchat"}},
        "cron:j1": {"sessionId": "s3", "updatedAt": 1, "channel": "slack"},
    });
    fs::write(sessions.join("sessions.json"), entries.to_string()).unwrap();
    // s3 was last written on 2026-11-05.
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(NOV5 as u64);
    fs::File::options().write(true).open(sessions.join("s3.jsonl")).unwrap().set_modified(at).unwrap();
}

fn row<'a>(v: &'a Value, key: &str) -> &'a Value {
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row {key}: {v}"))
}

#[test]
fn answers_follow_openclaw_2026_9_6() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let mut e = engine(dir.path());

    // From 2026-11-03 on: s3 is listed (updated since) but has no activity in range.
    let mut q = query(Method::SessionsUsage);
    q.start_ms = NOV5 - 2 * 86_400_000;
    let (v, _) = ask(&mut e, &q);
    assert_eq!(v["sessions"].as_array().unwrap().len(), 3);
    assert_eq!(v["aggregates"]["sessionCount"], 2, "only sessions with activity in range");
    assert_eq!(v["cacheStatus"]["cachedFiles"], 3);
    let old = row(&v, "agent:main:cron:j1");
    for field in ["activityDates", "dailyBreakdown", "dailyMessageCounts"] {
        assert!(old["usage"].get(field).is_none(), "{field} of a row without activity: {old}");
    }
    // The user's day and quarter hour stay, with zero tokens.
    let s1 = &row(&v, "agent:main:slack:direct:u1")["usage"];
    let days: Vec<(&str, u64)> = s1["dailyBreakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["date"].as_str().unwrap(), d["totalTokens"].as_u64().unwrap()))
        .collect();
    assert_eq!(days, [("2026-11-09", 0), ("2026-11-10", 101)]);
    let quarters: Vec<u64> = s1["utcQuarterHourTokenUsage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["totalTokens"].as_u64().unwrap())
        .collect();
    assert_eq!(quarters, [0, 101]);
    // Webchat is internal: no channel, no origin, no byChannel row; a group gets its title.
    let g6 = row(&v, "agent:main:webchat:group:g6");
    assert!(g6.get("channel").is_none() && g6.get("origin").is_none(), "{g6}");
    assert_eq!(g6["label"], "webchat:g-g6");
    let channels: Vec<&str> = v["aggregates"]["byChannel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["slack"]);
    // A key without its agent is the canonical one, and a key lookup finds it either way.
    let mut keyed = query(Method::SessionsUsage);
    keyed.key = Some("cron:j1".into());
    assert_eq!(ask(&mut e, &keyed).0["sessions"][0]["key"], "agent:main:cron:j1");

    // cachedFiles: the files the range lists for sessions.usage (s3, last written before the
    // range, is no row), every file of the scope for usage.cost.
    let mut later = query(Method::SessionsUsage);
    later.start_ms = DAY2 - 86_400_000;
    let (t, _) = ask(&mut e, &later);
    assert_eq!((t["sessions"].as_array().unwrap().len(), &t["cacheStatus"]["cachedFiles"]), (2, &json!(2)));
    let mut cost = query(Method::UsageCost);
    cost.start_ms = DAY2 - 86_400_000;
    assert_eq!(ask(&mut e, &cost).0["cacheStatus"]["cachedFiles"], 3);
    let (c, _) = ask(&mut e, &query(Method::UsageCost));
    // An unbounded range lists only the days with usage.
    let dates: Vec<&str> =
        c["daily"].as_array().unwrap().iter().map(|d| d["date"].as_str().unwrap()).collect();
    assert_eq!(dates, ["2026-11-01", "2026-11-10", "2026-11-12"]);

    // Logs: the tool result's header, assistant text trimmed.
    let mut logs = query(Method::SessionsUsageLogs);
    logs.key = Some("agent:main:slack:direct:u1".into());
    let (l, _) = ask(&mut e, &logs);
    let contents: Vec<&str> =
        l["logs"].as_array().unwrap().iter().map(|x| x["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["hi", "done", "[Tool: exec]\n[Tool Result]\nok"]);
}
