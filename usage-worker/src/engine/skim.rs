//! Blanks the long string values a transcript line's parser never reads, before serde_json sees
//! the line.
//!
//! Most of a transcript's bytes are message text and tool output, and that text carries an escape
//! (`\n`, `\"`) every ~33 bytes on the seed store: serde_json's string skipping stops at each
//! one, and was 30% of the worker's instructions on a cold read (BENCHMARKS.md). Here one pass
//! finds every string with `memchr2` and checks its escapes by JSON's rules (the same ones
//! serde_json applies to a string it skips: a known escape letter, or `u` and four hex digits);
//! an object member's value of 64 bytes or more whose key the parser does not read becomes `""`.
//! The parser then sees the same structure and the same values for every key it reads, so the
//! line's outcome is unchanged: a line serde_json would refuse is still refused, because every
//! blanked string was checked and everything else is passed on byte for byte. Anything this pass
//! cannot judge (a control byte, an unterminated string, a bad escape) leaves the line as it is
//! for serde_json to judge.

/// Keys whose string values `line.rs` reads, at any depth. Their values are never blanked; a key
/// written with escapes might decode to one of them, so its value is kept too.
const READ_KEYS: &[&[u8]] = &[
    b"timestamp",
    b"provider",
    b"model",
    b"role",
    b"stopReason",
    b"toolName",
    b"tool_name",
    b"type",
    b"name",
];

/// Shorter values are not worth a copy.
const MIN_BLANKED: usize = 64;

/// Lines shorter than this are parsed as they are.
pub const MIN_LINE: usize = 512;

/// Writes `line` with its long unread string values blanked into `out` (cleared first) and
/// returns true; returns false, leaving `out` unspecified, when nothing was blanked or the line
/// is left for serde_json to judge.
pub fn skim(line: &str, out: &mut String) -> bool {
    let b = line.as_bytes();
    out.clear();
    let mut copied = 0; // bytes of `line` before this are in `out` (or blanked)
    let mut key: Option<(usize, usize, bool)> = None; // the last key: start, end, had escapes
    let mut string: Option<(usize, bool)> = None; // inside a string: its start, whether it had escapes
    let mut skip_to = 0; // specials before this belong to an escape already checked
    let mut padded = [b'a'; 64];
    for (n, chunk) in b.chunks(64).enumerate() {
        let block = match <&[u8; 64]>::try_from(chunk) {
            Ok(block) => block,
            Err(_) => {
                padded[..chunk.len()].copy_from_slice(chunk);
                &padded
            }
        };
        let mut mask = specials(block);
        while mask != 0 {
            let p = n * 64 + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if p < skip_to {
                continue;
            }
            match (b[p], string) {
                // A control byte is whitespace outside a string and an error inside one; a
                // backslash outside a string is an error: serde_json judges such lines.
                (c, _) if c < 0x20 => return false,
                (b'\\', None) => return false,
                (b'"', None) => string = Some((p + 1, false)),
                (b'\\', Some((start, _))) => {
                    skip_to = match b.get(p + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => p + 2,
                        Some(b'u')
                            if b.get(p + 2..p + 6).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                        {
                            p + 6
                        }
                        _ => return false,
                    };
                    string = Some((start, true));
                }
                (_, Some((start, escaped))) => {
                    string = None;
                    let end = p;
                    if next_token(&b[end + 1..]) == Some(b':') {
                        key = Some((start, end, escaped));
                    } else if end - start >= MIN_BLANKED
                        && prev_token(&b[..start - 1]) == Some(b':')
                        && key.is_some_and(|(ks, ke, escaped)| !escaped && !READ_KEYS.contains(&&b[ks..ke]))
                    {
                        out.push_str(&line[copied..start]);
                        copied = end;
                    }
                }
                _ => unreachable!("specials() marks only quotes, backslashes and control bytes"),
            }
        }
    }
    if string.is_some() || copied == 0 {
        return false;
    }
    out.push_str(&line[copied..]);
    true
}

/// Bit k is set when `block[k]` is a quote, a backslash or a control byte: 64 bytes in a few
/// SSE2 instructions (part of every x86-64), where a byte loop costs ~14 instructions a byte.
#[cfg(target_arch = "x86_64")]
fn specials(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline, so these instructions exist on every CPU this
    // code runs on; each load reads bytes 16k..16k+16 of the 64-byte block, at any alignment.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let below_space = _mm_set1_epi8(0x1f);
        let mut mask = 0u64;
        for k in 0..4 {
            let v = _mm_loadu_si128(block.as_ptr().add(k * 16).cast());
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, below_space), v);
            let hits =
                _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)), control);
            mask |= u64::from(_mm_movemask_epi8(hits) as u16) << (k * 16);
        }
        mask
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn specials(block: &[u8; 64]) -> u64 {
    specials_bytewise(block)
}

/// The definition [`specials`] implements.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn specials_bytewise(block: &[u8; 64]) -> u64 {
    let mut mask = 0u64;
    for (k, &c) in block.iter().enumerate() {
        mask |= u64::from((c == b'"') | (c == b'\\') | (c < 0x20)) << k;
    }
    mask
}

/// The first byte that is not a space (the only JSON whitespace without a control byte).
fn next_token(b: &[u8]) -> Option<u8> {
    b.iter().copied().find(|&c| c != b' ')
}

/// The last byte that is not a space.
fn prev_token(b: &[u8]) -> Option<u8> {
    b.iter().rev().copied().find(|&c| c != b' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::line::{LineOutcome, parse_line};
    use proptest::prelude::*;

    fn skimmed(line: &str) -> Option<String> {
        let mut out = String::new();
        skim(line, &mut out).then_some(out)
    }

    const LONG: &str =
        "a long text with \\\"quotes\\\" and\\nnew lines \\u00e9 that nobody reads, long enough";

    #[test]
    fn long_unread_values_are_blanked_and_read_ones_kept() {
        let line = format!(
            r#"{{"type":"message","message":{{"role":"assistant","content":[{{"type":"text","text":"{LONG}"}},{{"type":"toolCall","name":"{LONG}","arguments":{{"command":"{LONG}"}}}}],"model":"{LONG}"}}}}"#
        );
        let out = skimmed(&line).expect("blanked");
        assert_eq!(
            out,
            format!(
                r#"{{"type":"message","message":{{"role":"assistant","content":[{{"type":"text","text":""}},{{"type":"toolCall","name":"{LONG}","arguments":{{"command":""}}}}],"model":"{LONG}"}}}}"#
            )
        );
        assert_eq!(parse_line(&out), parse_line(&line));
    }

    #[test]
    fn strings_in_arrays_short_values_and_escaped_keys_are_kept() {
        assert_eq!(skimmed(&format!(r#"{{"a":["{LONG}"]}}"#)), None);
        assert_eq!(skimmed(r#"{"text":"short"}"#), None);
        assert_eq!(skimmed(&format!(r#"{{"mod\u0065l":"{LONG}"}}"#)), None);
    }

    #[test]
    fn lines_it_cannot_judge_are_left_to_serde_json() {
        for bad in [
            format!("{{\"text\":\"{LONG}\t\"}}"),
            format!(r#"{{"text":"{LONG}\x"}}"#),
            format!(r#"{{"text":"{LONG}\u12"}}"#),
            format!(r#"{{"text":"{LONG}"#),
        ] {
            assert_eq!(skimmed(&bad), None, "{bad}");
        }
    }

    /// A JSON-ish line: real structure most of the time, with the mistakes a corrupt store has.
    fn line_strategy() -> impl Strategy<Value = String> {
        // Mostly valid text, so that most lines get blanked; now and then one of the mistakes
        // (bad escapes, a raw tab, a stray quote) that serde_json must go on refusing.
        let text = prop::collection::vec(
            prop_oneof![
                120 => Just("x".to_owned()),
                60 => Just("\\n".to_owned()),
                30 => Just("\\\"".to_owned()),
                20 => Just("\\\\".to_owned()),
                20 => Just("\\u00e9".to_owned()),
                20 => Just("é".to_owned()),
                50 => Just(" ".to_owned()),
                1 => Just("\\q".to_owned()),
                1 => Just("\\u12".to_owned()),
                1 => Just("\t".to_owned()),
                1 => Just("\"".to_owned()),
            ],
            20..80,
        )
        .prop_map(|parts| parts.concat());
        let key = prop_oneof![
            4 => Just("text"),
            4 => Just("command"),
            1 => Just("model"),
            1 => Just("role"),
            1 => Just("type"),
            1 => Just("name"),
            1 => Just("mod\\u0065l"),
            1 => Just("timestamp"),
        ];
        (key, text.clone(), text, prop::bool::ANY, 0u8..7).prop_map(|(key, a, b, usage, shape)| {
            let usage = if usage { r#","usage":{"input":10,"output":5,"cost":{"total":0.25}}"# } else { "" };
            match shape {
                0 => format!(
                    r#"{{"type":"message","timestamp":"2026-01-02T03:04:05Z","message":{{"role":"assistant","{key}":"{a}","content":[{{"type":"toolCall","name":"exec","{key}":"{b}"}}]{usage}}}}}"#
                ),
                1 => format!(
                    r#"{{"type":"message","message":{{"role":"toolResult","toolName":"exec","content":[{{"type":"text","{key}":"{a}"}}],"isError":true}}}}"#
                ),
                2 => format!(r#"{{"{key}" : "{a}" , "message" : {{ "role" : "assistant" {usage} }} }}"#),
                3 => format!(r#"{{"message":{{"role":"user","content":"{a}"}},"{key}":["{b}"]}}"#),
                4 => format!(r#"{{"message":{{"role":"assistant","{key}":"{a}"{usage}}}"#),
                5 => format!(r#"{{"type":"session","{key}":"{a}","cwd":"{b}"}}"#),
                _ => format!(r#"{{"message":{{"role":"assistant","{key}":"{a}"{usage}}}}} trailing"#),
            }
        })
    }

    /// The property below means something only if its lines get blanked and end in every outcome.
    #[test]
    fn the_generated_lines_cover_every_case() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let strategy = line_strategy();
        let (mut entry, mut malformed, mut ignored, mut left) = (0, 0, 0, 0);
        for _ in 0..1000 {
            let line = strategy.new_tree(&mut runner).unwrap().current();
            let Some(out) = skimmed(&line) else {
                left += 1;
                continue;
            };
            match parse_line(&out) {
                LineOutcome::Entry(_) => entry += 1,
                LineOutcome::Malformed => malformed += 1,
                LineOutcome::Ignored => ignored += 1,
            }
        }
        assert!(
            entry > 50 && malformed > 20 && ignored > 20 && left > 50,
            "{entry} {malformed} {ignored} {left}"
        );
    }

    proptest! {
        #[test]
        fn specials_marks_quotes_backslashes_and_control_bytes(block in prop::array::uniform32(any::<u8>()), high in prop::array::uniform32(prop::sample::select(vec![b'"', b'\\', 0, 0x1f, 0x20, 0x7f, 0x80, 0x9f, 0xff, b'a']))) {
            let mut all = [0u8; 64];
            all[..32].copy_from_slice(&block);
            all[32..].copy_from_slice(&high);
            prop_assert_eq!(specials(&all), specials_bytewise(&all));
        }

        /// Whatever the line, the parser's outcome on the skimmed line is its outcome on the
        /// line itself: the same entry, the same "ignored", the same "malformed".
        #[test]
        fn skimming_never_changes_what_a_line_counts_for(line in line_strategy()) {
            if let Some(out) = skimmed(&line) {
                prop_assert_eq!(parse_line(&out), parse_line(&line), "skimmed: {}", out);
            }
        }
    }
}
