//! Decides everything about a session before any byte is written: key, channel, model, and
//! the time of every message.
//!
//! Times are planned first because the header line (written first) carries the session start,
//! and the whole session, with its archive, must end by `end_ms`. Each session's plan comes from
//! its own PRNG stream, so sessions can be generated in parallel in any order.

use crate::catalog::{CHANNEL_WEIGHTS, CHANNELS, MODEL_WEIGHTS, MODELS, ModelInfo};
use crate::clock::{DAY, HOUR, MINUTE, SECOND};
use crate::rng::Rng;
use crate::transcript::TurnTimes;
use crate::{DemoSpec, text};

/// Share of sessions that also have an archived earlier transcript (`.jsonl.reset.<ts>`).
const ARCHIVE_RATE: f64 = 0.1;
/// Share of sessions that switch models part-way.
const SWITCH_RATE: f64 = 0.15;

/// When each message of one transcript happens.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    /// Header (session start) time.
    pub start_ms: i64,
    pub turns: Vec<TurnTimes>,
}

/// An archived earlier transcript of the same session key, rotated away by `/new`.
#[derive(Debug, Clone)]
pub(crate) struct Archive {
    pub session_id: String,
    pub timeline: Timeline,
    /// The archive's `.reset.<ts>` time.
    pub reset_ms: i64,
}

/// Everything needed to write one session.
#[derive(Debug, Clone)]
pub(crate) struct SessionPlan {
    pub key: String,
    pub session_id: String,
    pub channel: &'static str,
    pub chat_type: &'static str,
    pub from: String,
    pub label: Option<String>,
    pub model: &'static ModelInfo,
    /// Switch to another model before these turns.
    pub switches: Vec<(usize, &'static ModelInfo)>,
    pub timeline: Timeline,
    pub archive: Option<Archive>,
}

/// Message times relative to the session start (0), and the session's duration.
fn layout(r: &mut Rng, turns: u32, span: i64) -> (Vec<TurnTimes>, i64) {
    let first = r.range(2_000, 90_000) as i64;
    let mut shapes = Vec::with_capacity(turns as usize);
    // Per turn after the first: (minimum gap before it, weight of a long break).
    let mut gaps = Vec::with_capacity(turns as usize);
    let mut busy = first;
    let mut weight_sum = 0.0;
    for i in 0..turns {
        let shape = TurnTimes::draw(r, 0);
        busy += shape.reply;
        shapes.push(shape);
        if i > 0 {
            if r.chance(0.85) {
                // Back-and-forth within a conversation: seconds to a few minutes.
                let u = r.unit();
                let gap = 3 * SECOND + (u * u * (180 * SECOND) as f64) as i64;
                busy += gap;
                gaps.push((gap, 0.0));
            } else {
                // A break between conversations: shares the rest of the span.
                let w = 0.2 + r.unit();
                weight_sum += w;
                busy += 3 * SECOND;
                gaps.push((3 * SECOND, w));
            }
        }
    }
    let slack = (span - busy).max(0) as f64;
    let mut times = Vec::with_capacity(turns as usize);
    let mut t = first;
    for (i, shape) in shapes.iter().enumerate() {
        if i > 0 {
            let (gap, w) = gaps[i - 1];
            let extra = if weight_sum > 0.0 { (slack * w / weight_sum) as i64 } else { 0 };
            t += gap + extra;
        }
        times.push(TurnTimes {
            user: t,
            call: t + shape.call,
            result: t + shape.result,
            reply: t + shape.reply,
        });
        t += shape.reply;
    }
    (times, t)
}

/// A session length between hours and days, skewed short, at most half the window; one to
/// four weeks for the wide shape.
fn span(r: &mut Rng, window: i64, wide: bool) -> i64 {
    let u = r.unit();
    let span = if wide {
        7 * DAY + (u * (21 * DAY) as f64) as i64
    } else {
        2 * HOUR + (u * u * u * (70 * HOUR) as f64) as i64
    };
    span.min(window / 2)
}

fn shift(times: &mut [TurnTimes], by: i64) {
    for t in times {
        t.user += by;
        t.call += by;
        t.result += by;
        t.reply += by;
    }
}

/// Plans session `index` of agent `agent` (whose id is `agent_id`).
pub(crate) fn plan_session(spec: &DemoSpec, agent: u32, agent_id: &str, index: u32) -> SessionPlan {
    let r = &mut Rng::derive(spec.seed, &[u64::from(agent), u64::from(index), 0]);
    let channel = CHANNELS[r.weighted(CHANNEL_WEIGHTS)];
    let (key, chat_type, from, label) = if index == 0 {
        (format!("agent:{agent_id}:main"), "direct", format!("{channel}:user0"), None)
    } else {
        match r.weighted(&[50, 42, 8]) {
            0 => (
                format!("agent:{agent_id}:{channel}:direct:u{index}"),
                "direct",
                format!("{channel}:user{index}"),
                r.chance(0.1).then(|| format!("DM: {}", text::slice(r, text::Flavor::Prose, 12).trim())),
            ),
            1 => (
                format!("agent:{agent_id}:{channel}:group:g{index}"),
                "group",
                format!("{channel}:group:g{index}"),
                r.chance(0.5).then(|| {
                    let team = r.pick(&["eng", "ops", "sales", "support", "design", "data"]);
                    let topic = r.pick(&["alerts", "standup", "release", "oncall", "billing"]);
                    format!("#{team}-{topic}")
                }),
            ),
            _ => {
                let job = r.uuid_v4();
                let name =
                    r.pick(&["daily digest", "inbox triage", "weekly report", "backup check", "price watch"]);
                (format!("cron:{job}"), "direct", format!("cron:{job}"), Some(format!("Cron: {name}")))
            }
        }
    };
    let session_id = r.uuid_v4();
    let model = &MODELS[r.weighted(MODEL_WEIGHTS)];
    let turns = spec.turns_per_session;
    let mut switches: Vec<(usize, &'static ModelInfo)> = (turns >= 4 && r.chance(SWITCH_RATE))
        .then(|| {
            let at = r.range(u64::from(turns / 4), u64::from(turns * 3 / 4)) as usize;
            let mut other: &'static ModelInfo = &MODELS[r.weighted(MODEL_WEIGHTS)];
            if other == model {
                other = &MODELS[(r.below(MODELS.len() as u64 - 1) as usize + 1) % MODELS.len()];
            }
            (at.max(1), other)
        })
        .into_iter()
        .collect();
    if spec.wide {
        // Another model every three turns.
        switches = (3..turns as usize)
            .step_by(3)
            .map(|at| (at, &MODELS[r.below(MODELS.len() as u64) as usize]))
            .collect();
    }

    let window = i64::from(spec.days) * DAY;
    let current_span = span(r, window, spec.wide);
    let (mut current, current_len) = layout(r, turns, current_span);
    let archive = (turns > 0 && r.chance(ARCHIVE_RATE)).then(|| {
        let n = (u64::from(turns) * r.range(20, 50) / 100).max(1) as u32;
        let archive_span = span(r, window, spec.wide);
        let (times, len) = layout(r, n, archive_span);
        let to_reset = r.range(MINUTE as u64, 30 * MINUTE as u64) as i64;
        let to_next = r.range(50, 2_000) as i64;
        (r.uuid_v4(), times, len, to_reset, to_next)
    });
    let family_len =
        current_len + archive.as_ref().map_or(0, |(_, _, len, to_reset, to_next)| len + to_reset + to_next);
    let family_start = if index == 0 {
        // The main session is the one in use right now.
        spec.end_ms - r.range(0, (20 * MINUTE) as u64) as i64 - family_len
    } else {
        let lo = spec.end_ms - window;
        let hi = spec.end_ms - family_len;
        if hi > lo { lo + r.below((hi - lo) as u64) as i64 } else { hi }
    };

    let (archive, current_start) = match archive {
        Some((session_id, mut times, len, to_reset, to_next)) => {
            shift(&mut times, family_start);
            let reset_ms = family_start + len + to_reset;
            let archive =
                Archive { session_id, timeline: Timeline { start_ms: family_start, turns: times }, reset_ms };
            (Some(archive), reset_ms + to_next)
        }
        None => (None, family_start),
    };
    shift(&mut current, current_start);
    SessionPlan {
        key,
        session_id,
        channel,
        chat_type,
        from,
        label,
        model,
        switches,
        timeline: Timeline { start_ms: current_start, turns: current },
        archive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_fit_the_window_and_are_monotonic() {
        let spec = DemoSpec { end_ms: 1_800_000_000_000, ..DemoSpec::default() };
        for i in 0..200 {
            let p = plan_session(&spec, 1, "agent1", i);
            let mut last = i64::MIN;
            let lines = p.archive.iter().map(|a| &a.timeline).chain([&p.timeline]);
            for tl in lines {
                assert!(tl.start_ms > last);
                last = tl.start_ms;
                for t in &tl.turns {
                    for v in [t.user, t.call, t.result, t.reply] {
                        assert!(v > last, "session {i}");
                        last = v;
                    }
                }
            }
            assert!(last <= spec.end_ms);
            assert!(p.timeline.start_ms >= spec.end_ms - 90 * DAY - 4 * DAY);
        }
    }
}
