//! Property tests of every parser that reads untrusted store contents: transcript lines (JSONL
//! or SQLite events), ISO timestamps, `sessions.json`, and compressed SQLite rows. Each runs a
//! fixed number of cases in CI (proptest's 256); a long run:
//! `PROPTEST_CASES=200000 cargo test --release -p usage-worker fuzz_`.
//! A panic here is a bug: bad input must be a counted skip or an error.

use proptest::prelude::*;

use crate::engine::line::{LineOutcome, Role, parse_line, parse_line_bytes};
use crate::engine::rollup::{FileRollup, SkipCounts, fold_line};
use crate::engine::store::parse_entries;
use crate::engine::time::parse_iso_ms;

/// Real lines of the kinds the reader meets, to mutate.
const SEEDS: &[&str] = &[
    r#"{"type":"message","timestamp":"2026-11-09T10:36:33.469Z","message":{"role":"assistant","content":[{"type":"toolCall","id":"c1","name":"edit","arguments":{"path":"x"}}],"provider":"openai","model":"gpt-5","usage":{"input":391,"output":2287,"cacheRead":57642,"cacheWrite":0,"totalTokens":60320,"cost":{"input":0.00048875,"output":0.02287,"cacheRead":0.00720525,"cacheWrite":0.0,"total":0.030564}},"stopReason":"toolUse","timestamp":1794220593469}}"#,
    r#"{"type":"message","timestamp":"2026-11-09T10:36:30Z","message":{"role":"user","content":"hello"}}"#,
    r#"{"type":"message","message":{"role":"toolResult","toolCallId":"c1","toolName":"edit","content":[{"type":"text","text":"ok"}],"isError":true}}"#,
    r#"{"type":"session","id":"s1","timestamp":"2026-11-09T10:00:00.000Z","cwd":"/x"}"#,
    r#"{"timestamp":12,"usage":{"input_tokens":7,"prompt_tokens_details":{"cached_tokens":3},"cost":{"total":1e308}},"message":{"role":"assistant","usage":null}}"#,
    r#"{"type":"message","timestamp":"2026-11-09T10:36:40.000Z","durationMs":1200,"message":{"role":"assistant","content":[{"type":"text","text":"line1\nline2 \"q\" \u00e9 — ok"},{"type":"tool_use","name":"bash","input":{"cmd":"ls -la\n"}},{"type":"tool_result","is_error":true,"content":[{"type":"text","text":"x"}]}],"usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":2,"cost":{"total":0.5,"input":0.25}},"stopReason":"error","model":"claude","provider":"anthropic"}}"#,
];

fn mutate(seed: &str, at: usize, bytes: &[u8], cut: usize) -> Vec<u8> {
    let mut v = seed.as_bytes().to_vec();
    let at = at % (v.len() + 1);
    v.splice(at..at, bytes.iter().copied());
    v.truncate(v.len().saturating_sub(cut % 8));
    v
}

proptest! {
    #[test]
    fn fuzz_any_bytes_fold_into_a_rollup_without_panicking(line in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut r = FileRollup::default();
        let mut skips = SkipCounts::default();
        fold_line(&mut r, &mut skips, &line);
        // A line is either counted or skipped once, never both and never twice.
        prop_assert!(skips.lines() <= 1);
    }

    #[test]
    fn fuzz_mutated_transcript_lines_parse_or_are_skipped(
        which in 0..SEEDS.len(), at in any::<usize>(), bytes in proptest::collection::vec(any::<u8>(), 0..12), cut in any::<usize>()
    ) {
        let line = mutate(SEEDS[which], at, &bytes, cut);
        let mut r = FileRollup::default();
        let mut skips = SkipCounts::default();
        fold_line(&mut r, &mut skips, &line);
        if let Ok(text) = std::str::from_utf8(&line) {
            if let LineOutcome::Entry(e) = parse_line(text.trim()) {
                // Whatever was believed is within the plausibility limits.
                if let Some(u) = e.usage {
                    prop_assert!(u.parts().iter().all(|t| (*t as f64) <= crate::engine::line::MAX_TOKENS));
                }
                if let Some(c) = e.cost {
                    prop_assert!(c.total.is_finite() && c.total <= crate::engine::line::MAX_COST);
                }
            }
        }
    }

    /// The line cursor against the reference (`serde_json::Value`, then OpenClaw's rules written
    /// out): the same lines are JSON objects, and each yields the same facts.
    #[test]
    fn fuzz_mutated_lines_read_like_the_reference(
        which in 0..SEEDS.len(), at in any::<usize>(), bytes in proptest::collection::vec(any::<u8>(), 0..12), cut in any::<usize>()
    ) {
        let line = mutate(SEEDS[which], at, &bytes, cut);
        let line = line.trim_ascii();
        let value = std::str::from_utf8(line).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
        let ours = parse_line_bytes(line);
        match value.filter(serde_json::Value::is_object) {
            None => prop_assert_eq!(ours, LineOutcome::Malformed),
            Some(v) => match (super::reference::parse_entry(&v, &[]), ours) {
                (None, LineOutcome::Ignored) => {}
                (Some(r), LineOutcome::Entry(e)) => {
                    let role = match e.role {
                        Role::User => "user",
                        Role::Assistant => "assistant",
                        Role::ToolResult => "toolResult",
                    };
                    prop_assert_eq!(r.role.as_str(), role);
                    prop_assert_eq!(r.ts.filter(|t| t.unsigned_abs() <= 8_640_000_000_000_000), e.ts);
                    let u = e.usage.unwrap_or_default();
                    prop_assert_eq!(r.has_usage, e.usage.is_some());
                    if r.has_usage {
                        prop_assert_eq!((r.parts, r.total), (u.parts(), u.total_tokens()));
                    }
                    prop_assert_eq!(r.cost.map(|c| c[0]), e.cost.map(|c| c.total));
                    prop_assert_eq!(r.tools, e.tool_names.iter().map(|t| t.to_string()).collect::<Vec<_>>());
                    prop_assert_eq!(r.tool_results, u64::from(e.tool_results));
                    prop_assert_eq!(r.errors, u64::from(e.tool_errors) + u64::from(e.error_stop));
                    prop_assert_eq!(r.duration, e.duration_ms);
                }
                (r, o) => prop_assert!(false, "reference {:?}, ours {:?}", r, o),
            },
        }
    }

    #[test]
    fn fuzz_iso_timestamps_never_panic(s in "\\PC{0,40}") {
        let _ = parse_iso_ms(&s);
    }

    #[test]
    fn fuzz_iso_timestamps_agree_with_jiff(ms in -62_135_596_800_000i64..253_402_300_799_000i64) {
        // Every instant from year 1 to 9999, printed as JavaScript's toISOString does.
        let ts = jiff::Timestamp::from_millisecond(ms).unwrap();
        let text = ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        prop_assert_eq!(parse_iso_ms(&text), Some(ms), "{}", text);
    }

    #[test]
    fn fuzz_sessions_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_entries(&bytes);
    }

    #[test]
    fn fuzz_mutated_sessions_json_never_panics(at in any::<usize>(), bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
        let seed = r#"{"agent:a:main":{"sessionId":"s1","updatedAt":5,"origin":{"provider":"slack"},"usageFamilySessionIds":["s0"],"systemPromptReport":{"a":[1,2]}}}"#;
        let _ = parse_entries(&mutate(seed, at, &bytes, 0));
    }

    #[test]
    fn fuzz_compressed_rows_decode_or_are_skipped(blob in proptest::collection::vec(any::<u8>(), 0..200), claimed in 0i64..100_000) {
        use rusqlite::types::ValueRef;
        let mut d = crate::engine::sqlite_schema::RowDecoder::new().unwrap();
        let _ = d.decode(ValueRef::Null, ValueRef::Blob(&blob), ValueRef::Integer(claimed), 1 << 20);
    }

    /// A projection stands for its event only as a tool result: whatever `navigation_json`
    /// holds, what is found is its `model` member where serde_json reads the text whole, and it
    /// is folded only when the line reader reads it as exactly one tool result.
    #[test]
    fn fuzz_mutated_projections_stand_only_for_tool_results(
        which in 0..NAV_SEEDS.len(), at in any::<usize>(), bytes in proptest::collection::vec(any::<u8>(), 0..12), cut in any::<usize>()
    ) {
        use crate::engine::sqlite_schema::{model_projection, model_projection_serde};
        let nav = mutate(NAV_SEEDS[which], at, &bytes, cut);
        let taken = model_projection(&nav);
        if let Some(model) = model_projection_serde(&nav) {
            prop_assert_eq!(taken, Some(model));
        }
        if let Some(model) = taken {
            prop_assert!(model.starts_with(b"{") && model.ends_with(b"}"), "not an object");
            let mut r = FileRollup::default();
            let mut skips = SkipCounts::default();
            let folded = crate::engine::rollup::fold_if_tool_result(&mut r, &mut skips, model);
            let read = parse_line_bytes(model);
            prop_assert_eq!(folded, matches!(&read, LineOutcome::Entry(e) if e.role == Role::ToolResult));
            if let LineOutcome::Entry(e) = read && folded {
                prop_assert_eq!(e.tool_results, 1);
                prop_assert!(e.usage.is_none() && e.cost.is_none());
            } else {
                prop_assert_eq!(r, FileRollup::default());
                prop_assert_eq!(skips, SkipCounts::default());
            }
        }
    }
}

/// `navigation_json` as openclaw 2026.9.6 stores it beside a compressed tool result and a
/// compressed assistant reply (from the importer-made fixture, shortened).
const NAV_SEEDS: &[&str] = &[
    r#"{"version":1,"report":{"kind":"canonical","hasParentId":true},"navigation":{"type":"message","message":{"role":"toolResult"}},"model":{"type":"message","id":"953f48f1","parentId":"0f21ddb6","timestamp":"2026-11-09T10:36:36.088Z","message":{"role":"toolResult","toolCallId":"call_1","toolName":"edit","isError":false,"timestamp":1794220596088,"content":[]}},"modelBytes":5142}"#,
    r#"{"version":1,"model":{"type":"message","timestamp":"2026-11-09T10:36:36.088Z","message":{"role":"assistant","provider":"openai","model":"gpt-5","stopReason":"stop","content":[{"type":"toolCall","id":"c1","name":"edit"}]}},"modelBytes":4000}"#,
];
