//! One transcript line → the few facts usage needs, without building a JSON tree.
//!
//! A [`Cursor`] walks the line: only the fields OpenClaw's usage code reads are kept, everything
//! else (message text, tool output, thinking blocks, which are most of the bytes) is skipped
//! without copying. Every field is *lenient*: a field of an unexpected JSON type is treated the
//! way JavaScript's `typeof` checks treat it (ignored), never as a malformed line, so a valid-JSON
//! line is never lost because one field has a surprising type.
//!
//! Field semantics follow OpenClaw's `session-cost-usage` reader (REFERENCE §2) with the 2026.9
//! addition that `toolResult` messages are counted (as `toolResults`, and as `errors` when
//! `isError` is true; 2026.5 ignored them because only `user`/`assistant` rows passed its role
//! filter).

use std::borrow::Cow;

use super::json::{Cursor, R};
use super::time::parse_iso_ms;

/// Message roles that count for usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    /// 2026.9: counted as a tool result, never as a message in `messages.total`.
    ToolResult,
}

/// Normalised token counts of one usage object (`normalizeUsage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cache_read: Option<u64>,
    pub cache_write: Option<u64>,
    pub total: Option<u64>,
}

impl Usage {
    /// The four components, missing ones as 0.
    pub fn parts(&self) -> [u64; 4] {
        [
            self.input.unwrap_or(0),
            self.output.unwrap_or(0),
            self.cache_read.unwrap_or(0),
            self.cache_write.unwrap_or(0),
        ]
    }

    /// `usage.total` if present, else the four-component sum (OpenClaw's `totalTokens`).
    pub fn total_tokens(&self) -> u64 {
        self.total.unwrap_or_else(|| self.parts().iter().fold(0u64, |a, b| a.saturating_add(*b)))
    }
}

/// A stored cost (`usage.cost`) whose `total` is finite and ≥ 0; missing parts count as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CostParts {
    pub total: f64,
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

/// What one counted line contributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    pub role: Role,
    /// Entry `timestamp` (ISO) preferred, else `message.timestamp` (epoch ms).
    pub ts: Option<i64>,
    /// `message.durationMs`, else the entry's `durationMs`.
    pub duration_ms: Option<f64>,
    pub usage: Option<Usage>,
    pub cost: Option<CostParts>,
    pub provider: Option<Cow<'a, str>>,
    pub model: Option<Cow<'a, str>>,
    /// `stopReason` is `error`, `aborted` or `timeout`.
    pub error_stop: bool,
    /// Tool-call names, trimmed and de-duplicated within the message.
    pub tool_names: Vec<Cow<'a, str>>,
    pub tool_results: u32,
    pub tool_errors: u32,
    /// Its usage was dropped as implausible ([`MAX_TOKENS`], [`MAX_COST`]).
    pub implausible: bool,
}

/// How a line that is valid UTF-8 without NUL bytes was classified.
// Returned by value once per line and consumed at once; boxing would cost an allocation per line.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum LineOutcome<'a> {
    Entry(Entry<'a>),
    /// Valid JSON object that does not count (headers, other roles, custom entries).
    Ignored,
    /// Not JSON, or JSON that is not an object.
    Malformed,
}

/// Parses one line (already trimmed, UTF-8 checked).
pub fn parse_line(line: &str) -> LineOutcome<'_> {
    parse(line.as_bytes(), true)
}

/// Parses one line (already trimmed) from bytes: a line that is not UTF-8 is `Malformed` here
/// (the caller tells the two apart only for lines that fail, so good lines are checked once).
pub fn parse_line_bytes(line: &[u8]) -> LineOutcome<'_> {
    parse(line, false)
}

fn parse(line: &[u8], utf8_known: bool) -> LineOutcome<'_> {
    let mut c = Cursor::new(line);
    let mut raw = RawLine::default();
    if c.peek() != Ok(b'{') || raw.read(&mut c).is_err() {
        return LineOutcome::Malformed;
    }
    // Skipped strings were checked for JSON, not UTF-8: only a line with a high byte needs it.
    if !c.at_end() || (!utf8_known && c.saw_non_ascii() && simdutf8::basic::from_utf8(line).is_err()) {
        return LineOutcome::Malformed;
    }
    match raw.into_entry() {
        Some(e) => LineOutcome::Entry(e),
        None => LineOutcome::Ignored,
    }
}

// ---------------------------------------------------------------------------------------------
// Lenient field plumbing.

/// A present field: JSON `null`, a value of the wanted type, or anything else.
/// (`undefined`, i.e. an absent key, is the `Option::None` around it.)
#[derive(Debug, Clone, PartialEq)]
enum F<T> {
    Null,
    Other,
    Val(T),
}

impl<T> F<T> {
    fn val(self) -> Option<T> {
        match self {
            F::Val(v) => Some(v),
            _ => None,
        }
    }
}

/// JavaScript `a ?? b` over optional lenient fields, then the wanted type.
fn coalesce<T>(a: Option<F<T>>, b: Option<F<T>>) -> Option<T> {
    match a {
        None | Some(F::Null) => b.and_then(F::val),
        Some(f) => f.val(),
    }
}

/// A field's value: `read` when its first byte is one `wanted` accepts, else `null` or anything
/// else, checked and passed over (an object's keys are unescaped on the way, as serde_json does
/// for a field it reads).
fn field<'a, T>(
    c: &mut Cursor<'a>,
    wanted: fn(u8) -> bool,
    read: impl FnOnce(&mut Cursor<'a>) -> R<T>,
) -> R<F<T>> {
    let first = c.peek()?;
    if wanted(first) {
        return read(c).map(F::Val);
    }
    match first {
        b'n' => c.literal().map(|()| F::Null),
        b'"' => c.skip_str().map(|()| F::Other),
        b'-' | b'0'..=b'9' => c.number().map(|_| F::Other),
        b'{' => c.object(|c, _| c.skip()).map(|()| F::Other),
        b'[' => c.array(Cursor::skip).map(|()| F::Other),
        _ => c.literal().map(|()| F::Other),
    }
}

fn string<'a>(c: &mut Cursor<'a>) -> R<F<Cow<'a, str>>> {
    field(c, |b| b == b'"', Cursor::string)
}

fn number(c: &mut Cursor<'_>) -> R<F<f64>> {
    field(c, |b| b == b'-' || b.is_ascii_digit(), Cursor::number)
}

fn boolean(c: &mut Cursor<'_>) -> R<F<bool>> {
    field(
        c,
        |b| b == b't' || b == b'f',
        |c| {
            let t = c.peek()? == b't';
            c.literal().map(|()| t)
        },
    )
}

fn object<'a, T>(c: &mut Cursor<'a>, read: impl FnOnce(&mut Cursor<'a>) -> R<T>) -> R<F<T>> {
    field(c, |b| b == b'{', read)
}

type OStr<'a> = Option<F<Cow<'a, str>>>;

// ---------------------------------------------------------------------------------------------
// The shapes.

/// Read in place: a line's fields are over a kilobyte, and moving them through every layer of
/// every line's parse was 4% of a cold read.
#[derive(Default)]
struct RawLine<'a> {
    timestamp: OStr<'a>,
    /// What `message` was; its fields are in `msg` when it was an object.
    message: Option<F<()>>,
    msg: RawMessage<'a>,
    usage: Option<F<Box<RawUsage>>>,
    provider: OStr<'a>,
    model: OStr<'a>,
    duration_ms: Option<F<f64>>,
}

impl<'a> RawLine<'a> {
    fn read(&mut self, c: &mut Cursor<'a>) -> R<()> {
        let r = self;
        c.object(|c, k| {
            match &*k {
                b"timestamp" => r.timestamp = Some(string(c)?),
                b"message" => r.message = Some(object(c, |c| r.msg.read(c))?),
                b"usage" => r.usage = Some(usage(c)?),
                b"provider" => r.provider = Some(string(c)?),
                b"model" => r.model = Some(string(c)?),
                b"durationMs" => r.duration_ms = Some(number(c)?),
                _ => c.skip()?,
            }
            Ok(())
        })
    }
}

#[derive(Default)]
struct RawMessage<'a> {
    role: OStr<'a>,
    usage: Option<F<Box<RawUsage>>>,
    provider: OStr<'a>,
    model: OStr<'a>,
    stop_reason: OStr<'a>,
    duration_ms: Option<F<f64>>,
    timestamp: Option<F<f64>>,
    tool_name: OStr<'a>,
    tool_name_snake: OStr<'a>,
    content: Option<F<Content<'a>>>,
    is_error: Option<F<bool>>,
}

impl<'a> RawMessage<'a> {
    /// Reads the object at the cursor (a repeated `message` key: the last one counts).
    fn read(&mut self, c: &mut Cursor<'a>) -> R<()> {
        let m = self;
        *m = RawMessage::default();
        c.object(|c, k| {
            match &*k {
                b"role" => m.role = Some(string(c)?),
                b"usage" => m.usage = Some(usage(c)?),
                b"provider" => m.provider = Some(string(c)?),
                b"model" => m.model = Some(string(c)?),
                b"stopReason" => m.stop_reason = Some(string(c)?),
                b"durationMs" => m.duration_ms = Some(number(c)?),
                b"timestamp" => m.timestamp = Some(number(c)?),
                b"toolName" => m.tool_name = Some(string(c)?),
                b"tool_name" => m.tool_name_snake = Some(string(c)?),
                b"content" => m.content = Some(field(c, |b| b == b'[', Content::read)?),
                b"isError" => m.is_error = Some(boolean(c)?),
                _ => c.skip()?,
            }
            Ok(())
        })
    }
}

/// A usage object is ~450 bytes of optional numbers: boxed, it is allocated only on lines that
/// have one.
fn usage(c: &mut Cursor<'_>) -> R<F<Box<RawUsage>>> {
    object(c, |c| RawUsage::read(c).map(Box::new))
}

/// What the `content` array says about tools.
#[derive(Default)]
struct Content<'a> {
    tool_names: Vec<Cow<'a, str>>,
    tool_results: u32,
    tool_errors: u32,
}

impl<'a> Content<'a> {
    fn read(c: &mut Cursor<'a>) -> R<Self> {
        let mut out = Content::default();
        c.array(|c| {
            let F::Val(b) = object(c, Block::read)? else { return Ok(()) };
            let Some(ty) = b.ty else { return Ok(()) };
            let ty = ty.trim();
            if ty.eq_ignore_ascii_case("tool_use")
                || ty.eq_ignore_ascii_case("toolcall")
                || ty.eq_ignore_ascii_case("tool_call")
            {
                if let Some(name) = b.name {
                    push_name(&mut out.tool_names, name);
                }
            } else if ty.eq_ignore_ascii_case("tool_result") || ty.eq_ignore_ascii_case("tool_result_error") {
                out.tool_results += 1;
                if b.is_error {
                    out.tool_errors += 1;
                }
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// Adds a trimmed, non-empty tool name unless the message already has it.
fn push_name<'a>(names: &mut Vec<Cow<'a, str>>, name: Cow<'a, str>) {
    let trimmed = name.trim();
    if trimmed.is_empty() || names.iter().any(|n| n == trimmed) {
        return;
    }
    let name = if trimmed.len() == name.len() {
        name
    } else {
        match name {
            Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
            Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
        }
    };
    names.push(name);
}

#[derive(Default)]
struct Block<'a> {
    ty: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    is_error: bool,
}

impl<'a> Block<'a> {
    fn read(c: &mut Cursor<'a>) -> R<Self> {
        let mut b = Block::default();
        c.object(|c, k| {
            match &*k {
                b"type" => b.ty = string(c)?.val(),
                b"name" => b.name = string(c)?.val(),
                b"is_error" => b.is_error = boolean(c)?.val() == Some(true),
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(b)
    }
}

/// A raw usage object: every alias kept in OpenClaw's preference order.
#[derive(Default, Debug)]
struct RawUsage {
    /// input, inputTokens, input_tokens, promptTokens, prompt_tokens, prompt_n
    input: [Option<f64>; 6],
    /// output, outputTokens, output_tokens, completionTokens, completion_tokens, predicted_n
    output: [Option<f64>; 6],
    /// cacheRead, cache_read, cache_read_input_tokens, cached_tokens, *_tokens_details.cached_tokens
    cache_read: [Option<f64>; 5],
    /// cacheWrite, cache_write, cache_creation_input_tokens
    cache_write: [Option<f64>; 3],
    /// total, totalTokens, total_tokens
    total: [Option<f64>; 3],
    cost: Option<RawCost>,
}

impl RawUsage {
    fn read(c: &mut Cursor<'_>) -> R<Self> {
        let mut u = RawUsage::default();
        c.object(|c, k| {
            let slot = match &*k {
                b"input" => &mut u.input[0],
                b"inputTokens" => &mut u.input[1],
                b"input_tokens" => &mut u.input[2],
                b"promptTokens" => &mut u.input[3],
                b"prompt_tokens" => &mut u.input[4],
                b"prompt_n" => &mut u.input[5],
                b"output" => &mut u.output[0],
                b"outputTokens" => &mut u.output[1],
                b"output_tokens" => &mut u.output[2],
                b"completionTokens" => &mut u.output[3],
                b"completion_tokens" => &mut u.output[4],
                b"predicted_n" => &mut u.output[5],
                b"cacheRead" => &mut u.cache_read[0],
                b"cache_read" => &mut u.cache_read[1],
                b"cache_read_input_tokens" => &mut u.cache_read[2],
                b"cached_tokens" => &mut u.cache_read[3],
                b"cacheWrite" => &mut u.cache_write[0],
                b"cache_write" => &mut u.cache_write[1],
                b"cache_creation_input_tokens" => &mut u.cache_write[2],
                b"total" => &mut u.total[0],
                b"totalTokens" => &mut u.total[1],
                b"total_tokens" => &mut u.total[2],
                b"cost" => {
                    u.cost = object(c, RawCost::read)?.val();
                    return Ok(());
                }
                other if other.ends_with(b"_tokens_details") => {
                    let cached = object(c, cached_tokens)?.val().flatten();
                    if u.cache_read[4].is_none() {
                        u.cache_read[4] = cached;
                    }
                    return Ok(());
                }
                _ => return c.skip(),
            };
            *slot = number(c)?.val();
            Ok(())
        })?;
        Ok(u)
    }
}

/// `*_tokens_details.cached_tokens`.
fn cached_tokens(c: &mut Cursor<'_>) -> R<Option<f64>> {
    let mut cached = None;
    c.object(|c, k| {
        if *k == *b"cached_tokens" {
            cached = number(c)?.val();
            Ok(())
        } else {
            c.skip()
        }
    })?;
    Ok(cached)
}

#[derive(Default, Debug)]
struct RawCost {
    total: Option<f64>,
    input: Option<f64>,
    output: Option<f64>,
    cache_read: Option<f64>,
    cache_write: Option<f64>,
}

impl RawCost {
    fn read(c: &mut Cursor<'_>) -> R<Self> {
        let mut cost = RawCost::default();
        c.object(|c, k| {
            let slot = match &*k {
                b"total" => &mut cost.total,
                b"input" => &mut cost.input,
                b"output" => &mut cost.output,
                b"cacheRead" => &mut cost.cache_read,
                b"cacheWrite" => &mut cost.cache_write,
                _ => return c.skip(),
            };
            *slot = number(c)?.val();
            Ok(())
        })?;
        Ok(cost)
    }
}

// ---------------------------------------------------------------------------------------------
// Normalisation.

/// The first positive alias, else the first finite one (`normalizeUsage`'s `pick`).
fn pick(vals: &[Option<f64>]) -> Option<f64> {
    vals.iter().flatten().copied().find(|v| *v > 0.0).or_else(|| vals.iter().flatten().copied().next())
}

/// The largest token count one usage field may plausibly carry: ten billion, a thousand times
/// the largest context window of any model. A usage object with a larger count (a corrupt or
/// hostile line: `2^64` tokens) is not summed; the message still counts and the line is counted
/// in `implausibleUsage`.
pub const MAX_TOKENS: f64 = 1e10;
/// The largest cost (in dollars, any part) one usage entry may plausibly carry.
pub const MAX_COST: f64 = 1e6;

/// Truncates to an integer; negative values become 0 (OpenClaw's reading).
fn tokens(v: f64) -> u64 {
    if v > 0.0 { v.trunc() as u64 } else { 0 }
}

impl RawUsage {
    /// Whether any number OpenClaw would use is beyond belief (see [`MAX_TOKENS`]).
    fn implausible(&self) -> bool {
        let fields =
            [&self.input[..], &self.output[..], &self.cache_read[..], &self.cache_write[..], &self.total[..]];
        let big_tokens = fields.iter().any(|f| pick(f).is_some_and(|v| v > MAX_TOKENS));
        let big_cost = self.cost.as_ref().is_some_and(|c| {
            [c.total, c.input, c.output, c.cache_read, c.cache_write]
                .iter()
                .flatten()
                .any(|v| !v.is_finite() || v.abs() > MAX_COST)
        });
        big_tokens || big_cost
    }

    fn normalize(&self) -> Option<Usage> {
        let mut u = Usage {
            input: pick(&self.input).map(tokens),
            output: pick(&self.output).map(tokens),
            cache_read: pick(&self.cache_read).map(tokens),
            cache_write: pick(&self.cache_write).map(tokens),
            total: pick(&self.total).map(tokens),
        };
        if u == Usage::default() {
            return None;
        }
        // OpenAI-shaped usage counts cached prompt tokens inside the prompt count.
        let openai = self.cache_read[3].is_some() || self.cache_read[4].is_some();
        if openai && let (Some(i), Some(c)) = (u.input, u.cache_read) {
            u.input = Some(i.saturating_sub(c));
        }
        Some(u)
    }

    fn cost(&self) -> Option<CostParts> {
        let c = self.cost.as_ref()?;
        let total = c.total.filter(|t| *t >= 0.0)?;
        Some(CostParts {
            total,
            input: c.input.unwrap_or(0.0),
            output: c.output.unwrap_or(0.0),
            cache_read: c.cache_read.unwrap_or(0.0),
            cache_write: c.cache_write.unwrap_or(0.0),
        })
    }
}

impl<'a> RawLine<'a> {
    fn into_entry(self) -> Option<Entry<'a>> {
        let F::Val(()) = self.message? else {
            return None;
        };
        let m = self.msg;
        let role = match m.role.and_then(F::val).as_deref() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("toolResult") => Role::ToolResult,
            _ => return None,
        };
        let ts = self.timestamp.and_then(F::val).and_then(|s| parse_iso_ms(&s)).or_else(|| {
            m.timestamp.and_then(F::val).filter(|t| t.abs() <= 8.64e15).map(|t| t.trunc() as i64)
        });
        if role == Role::ToolResult {
            let err = m.is_error.and_then(F::val) == Some(true);
            return Some(Entry {
                role,
                ts,
                duration_ms: None,
                usage: None,
                cost: None,
                provider: None,
                model: None,
                error_stop: false,
                tool_names: Vec::new(),
                tool_results: 1,
                tool_errors: u32::from(err),
                implausible: false,
            });
        }
        let raw_usage = coalesce(m.usage, self.usage);
        let implausible = raw_usage.as_ref().is_some_and(|u| u.implausible());
        let raw_usage = raw_usage.filter(|_| !implausible);
        let usage = raw_usage.as_ref().and_then(|u| u.normalize());
        let cost = raw_usage.as_ref().and_then(|u| u.cost());
        let content = m.content.and_then(F::val).unwrap_or_default();
        let mut tool_names = Vec::new();
        if let Some(n) = coalesce(m.tool_name, m.tool_name_snake) {
            push_name(&mut tool_names, n);
        }
        for n in content.tool_names {
            push_name(&mut tool_names, n);
        }
        let error_stop =
            matches!(m.stop_reason.and_then(F::val).as_deref(), Some("error" | "aborted" | "timeout"));
        Some(Entry {
            role,
            ts,
            duration_ms: m.duration_ms.and_then(F::val).or_else(|| self.duration_ms.and_then(F::val)),
            usage,
            cost,
            provider: m.provider.and_then(F::val).or_else(|| self.provider.and_then(F::val)),
            model: m.model.and_then(F::val).or_else(|| self.model.and_then(F::val)),
            error_stop,
            tool_names,
            tool_results: content.tool_results,
            tool_errors: content.tool_errors,
            implausible,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str) -> Entry<'_> {
        match parse_line(line) {
            LineOutcome::Entry(e) => e,
            other => panic!("not an entry: {other:?}"),
        }
    }

    #[test]
    fn assistant_line() {
        let e = entry(
            r#"{"type":"message","timestamp":"2026-11-09T10:36:33.469Z","message":{"role":"assistant","content":[{"type":"text","text":"hi \"there\""},{"type":"toolCall","id":"c1","name":"edit","arguments":{"path":"x"}},{"type":"toolCall","name":" edit "}],"provider":"openai","model":"gpt-5","usage":{"input":391,"output":2287,"cacheRead":57642,"cacheWrite":0,"totalTokens":60320,"cost":{"input":0.00048875,"output":0.02287,"cacheRead":0.00720525,"cacheWrite":0.0,"total":0.030564}},"stopReason":"toolUse","timestamp":1794220593469}}"#,
        );
        assert_eq!(e.role, Role::Assistant);
        assert_eq!(e.ts, Some(1_794_220_593_469));
        assert_eq!(e.provider.as_deref(), Some("openai"));
        assert_eq!(e.tool_names, vec![Cow::Borrowed("edit")]);
        let u = e.usage.unwrap();
        assert_eq!(u.parts(), [391, 2287, 57642, 0]);
        assert_eq!(u.total_tokens(), 60320);
        assert_eq!(e.cost.unwrap().total, 0.030564);
        assert!(!e.error_stop);
    }

    #[test]
    fn aliases_and_openai_shape() {
        let e = entry(
            r#"{"message":{"role":"assistant","usage":{"prompt_tokens":1000,"completion_tokens":20.9,"prompt_tokens_details":{"cached_tokens":600},"total_tokens":1020}},"usage":{"input":5}}"#,
        );
        let u = e.usage.unwrap();
        assert_eq!(u.parts(), [400, 20, 600, 0]);
        assert_eq!(u.total, Some(1020));
        assert!(e.cost.is_none());
        assert_eq!(e.ts, None);
    }

    #[test]
    fn fallbacks_and_leniency() {
        // message.usage null → top-level usage; wrong-typed fields are ignored, not fatal.
        let e = entry(
            r#"{"timestamp":12,"provider":"p","model":"m","usage":{"input":-3,"inputTokens":7,"output":"x","cost":{"total":-1}},"message":{"role":"user","usage":null,"timestamp":1000.7,"content":"hello","stopReason":"error","tool_name":"bash"}}"#,
        );
        assert_eq!(e.ts, Some(1000));
        assert_eq!(e.usage.unwrap().input, Some(7));
        assert_eq!(e.usage.unwrap().output, None);
        assert!(e.cost.is_none());
        assert_eq!(e.provider.as_deref(), Some("p"));
        assert!(e.error_stop);
        assert_eq!(e.tool_names, vec![Cow::Borrowed("bash")]);
    }

    #[test]
    fn tool_results_and_ignored_lines() {
        let e = entry(
            r#"{"type":"message","timestamp":"2026-11-09T10:36:36.088Z","message":{"role":"toolResult","toolName":"edit","content":[{"type":"text","text":"long"}],"isError":true}}"#,
        );
        assert_eq!((e.role, e.tool_results, e.tool_errors), (Role::ToolResult, 1, 1));
        assert!(e.tool_names.is_empty());
        let e = entry(
            r#"{"message":{"role":"user","content":[{"type":"tool_result","is_error":true},{"type":"TOOL_RESULT"}]}}"#,
        );
        assert_eq!((e.tool_results, e.tool_errors), (2, 1));
        assert_eq!(parse_line(r#"{"type":"session","id":"x"}"#), LineOutcome::Ignored);
        assert_eq!(parse_line(r#"{"message":{"role":"system"}}"#), LineOutcome::Ignored);
        assert_eq!(parse_line(r#"{"message":"text"}"#), LineOutcome::Ignored);
        assert_eq!(parse_line(r#"[1,2]"#), LineOutcome::Malformed);
        assert_eq!(parse_line(r#"{"message":"#), LineOutcome::Malformed);
        assert_eq!(parse_line(r#"{"a":1} x"#), LineOutcome::Malformed);
    }

    #[test]
    fn a_usage_that_is_not_an_object_counts_no_tokens_and_hides_the_top_level_one() {
        // `message.usage ?? entry.usage`: only null or absent falls back (a usage of another type hides it).
        for usage in ["5", r#""x""#, "[1,2]", "true"] {
            let line = format!(
                r#"{{"usage":{{"input":7}},"message":{{"role":"assistant","usage":{usage},"model":"m"}}}}"#
            );
            let e = entry(&line);
            assert!(e.usage.is_none() && e.cost.is_none() && !e.implausible, "{usage}");
            assert_eq!(e.model.as_deref(), Some("m"), "{usage}");
        }
    }

    #[test]
    fn escaped_keys_and_strings_work() {
        let e = entry(r#"{"message":{"r\u006fle":"assistant","model":"m\"1","usage":{"output":3}}}"#);
        assert_eq!(e.model.as_deref(), Some("m\"1"));
        assert_eq!(e.usage.unwrap().output, Some(3));
    }
}
