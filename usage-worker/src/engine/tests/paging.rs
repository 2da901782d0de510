//! clawgate's paging of `sessions.usage` rows (`offset`, `sort`, `search`): pages put together
//! are the whole list in the asked order, totals never depend on the page, and an answer to
//! OpenClaw's own params carries no paging field.

use ipc_proto::{Method, RowSort, SortKey};
use serde_json::Value;

use super::generate::{Spec, generate};
use super::{ask, engine, query};

fn keys(v: &Value) -> Vec<String> {
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_owned() + "|" + r["sessionId"].as_str().unwrap())
        .collect()
}

#[test]
fn pages_make_up_the_whole_list_in_every_order() {
    let dir = tempfile::tempdir().unwrap();
    generate(
        dir.path(),
        &Spec { agents: 3, sessions_per_agent: 9, turns: 3, tool_result_bytes: 200, seed: 5 },
    );
    let mut e = engine(dir.path());
    let all = ask(&mut e, &query(Method::SessionsUsage)).0;
    assert!(all.get("page").is_none(), "OpenClaw's params, OpenClaw's shape");
    let n = all["sessions"].as_array().unwrap().len();
    assert!(n > 20);
    for sort in [
        None,
        Some(RowSort { key: SortKey::Cost, descending: true }),
        Some(RowSort { key: SortKey::Tokens, descending: false }),
        Some(RowSort { key: SortKey::Messages, descending: true }),
        Some(RowSort { key: SortKey::UpdatedAt, descending: false }),
    ] {
        let mut got = Vec::new();
        let mut offset = 0;
        loop {
            let mut q = query(Method::SessionsUsage);
            q.limit = Some(7);
            q.offset = Some(offset);
            q.sort = sort;
            let (v, _) = ask(&mut e, &q);
            assert_eq!(v["page"]["total"], n, "{sort:?}");
            assert_eq!(v["totals"], all["totals"], "totals never depend on the page");
            let rows = keys(&v);
            if rows.is_empty() {
                break;
            }
            // In order within and across pages.
            if let Some(RowSort { key, descending }) = sort {
                let field = match key {
                    SortKey::Cost => "totalCost",
                    SortKey::Tokens => "totalTokens",
                    SortKey::Messages => "",
                    SortKey::UpdatedAt => "",
                };
                if !field.is_empty() {
                    let vals: Vec<f64> = v["sessions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r["usage"][field].as_f64().unwrap())
                        .collect();
                    for w in vals.windows(2) {
                        assert!(if descending { w[0] >= w[1] } else { w[0] <= w[1] }, "{sort:?}: {vals:?}");
                    }
                }
            }
            got.extend(rows);
            offset += 7;
        }
        let mut want = keys(&all);
        if sort.is_none() {
            assert_eq!(got, want, "OpenClaw's order, paged");
        }
        got.sort();
        want.sort();
        assert_eq!(got, want, "{sort:?}: every row exactly once");
    }
}

#[test]
fn search_filters_rows_not_totals() {
    let dir = tempfile::tempdir().unwrap();
    generate(
        dir.path(),
        &Spec { agents: 3, sessions_per_agent: 9, turns: 3, tool_result_bytes: 200, seed: 6 },
    );
    let mut e = engine(dir.path());
    let all = ask(&mut e, &query(Method::SessionsUsage)).0;
    let mut q = query(Method::SessionsUsage);
    q.search = Some("AGENT1".into());
    let (v, _) = ask(&mut e, &q);
    let rows = v["sessions"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["agentId"] == "agent1" || r["key"].as_str().unwrap().contains("agent1")));
    assert_eq!(v["page"]["total"], rows.len());
    assert_eq!(v["totals"], all["totals"]);
    q.search = Some("no-such-thing-anywhere".into());
    let (v, _) = ask(&mut e, &q);
    assert_eq!(v["page"]["total"], 0);
    assert_eq!(v["sessions"], serde_json::json!([]));
}

#[test]
fn rows_past_the_answer_budget_are_cut_with_a_diagnostic_and_totals_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    generate(
        dir.path(),
        &Spec { agents: 2, sessions_per_agent: 12, turns: 4, tool_result_bytes: 200, seed: 8 },
    );
    let (all, _) = ask(&mut engine(dir.path()), &query(Method::SessionsUsage));
    let mut cfg = crate::engine::EngineConfig::new(dir.path());
    cfg.answer_budget = 20_000;
    let mut e = crate::engine::Engine::new(cfg);
    let (v, _) = ask(&mut e, &query(Method::SessionsUsage));
    let cut = &v["diagnostics"]["rowsCut"];
    let returned = v["sessions"].as_array().unwrap().len();
    assert!(returned > 0 && returned < all["sessions"].as_array().unwrap().len(), "{cut}");
    assert_eq!(cut["returned"], returned);
    assert_eq!(cut["requested"], all["sessions"].as_array().unwrap().len());
    assert!(cut["reason"].as_str().unwrap().contains("answer budget"));
    assert_eq!(v["totals"], all["totals"]);
    assert_eq!(v["aggregates"]["sessionCount"], all["aggregates"]["sessionCount"]);
    assert!(all["diagnostics"].get("rowsCut").is_none());
    // The same answer given again from the answer cache still says what it left out.
    let (again, _) = ask(&mut e, &query(Method::SessionsUsage));
    assert_eq!(again["sessions"].as_array().unwrap().len(), returned);
    assert_eq!(&again["diagnostics"]["rowsCut"], cut);
}

#[test]
fn rows_rendered_by_the_helper_thread_read_like_rows_rendered_inline() {
    let dir = tempfile::tempdir().unwrap();
    generate(
        dir.path(),
        &Spec { agents: 2, sessions_per_agent: 40, turns: 2, tool_result_bytes: 100, seed: 11 },
    );
    // One cold page of all rows: past the first few, the helper thread renders them, and the
    // page is longer than the read-ahead bound (a debug assertion checks it in the loop).
    let all = ask(&mut engine(dir.path()), &query(Method::SessionsUsage)).0;
    let rows = all["sessions"].as_array().unwrap();
    assert!(rows.len() > crate::engine::rows::READ_AHEAD, "{}", rows.len());
    // A fresh engine asked one row at a time renders each on its own thread.
    let mut e = engine(dir.path());
    for (k, row) in rows.iter().enumerate() {
        let mut q = query(Method::SessionsUsage);
        q.limit = Some(1);
        q.offset = Some(k as u32);
        let one = ask(&mut e, &q).0;
        assert_eq!(&one["sessions"][0], row, "row {k}");
    }
}
