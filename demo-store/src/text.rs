//! Precomputed text pools that message and tool-result bodies are sliced from.
//!
//! Building megabytes of varied text per session would dominate generation time, so a few pools
//! (code, logs, web results, prose) are built once from a fixed seed and every body is a
//! word-aligned slice of one of them. The pools include quotes, backslashes, tabs and non-ASCII
//! so that readers of the store exercise real JSON string escaping.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::OnceLock;

use crate::rng::Rng;

/// Which flavour of text a body should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// Chat prose: user prompts and assistant replies.
    Prose,
    /// Source code, as returned by `read`/`write`/`edit`.
    Code,
    /// Command output, as returned by `exec`.
    Log,
    /// Search hits and page text, as returned by `browser`/`web_search`/`memory_search`.
    Web,
}

struct Pools {
    prose: String,
    code: String,
    log: String,
    web: String,
}

const POOL_BYTES: usize = 1 << 20;

const WORDS: &[&str] = &[
    "agent",
    "session",
    "gateway",
    "token",
    "cache",
    "usage",
    "cost",
    "model",
    "provider",
    "request",
    "response",
    "latency",
    "report",
    "summary",
    "index",
    "config",
    "channel",
    "queue",
    "worker",
    "thread",
    "memory",
    "runtime",
    "transcript",
    "store",
    "batch",
    "daily",
    "result",
    "file",
    "message",
    "tool",
    "deploy",
    "build",
    "test",
    "branch",
    "commit",
    "review",
    "schema",
    "table",
    "migration",
    "endpoint",
    "handler",
    "client",
    "server",
    "socket",
    "timeout",
    "retry",
    "budget",
    "invoice",
    "customer",
    "ticket",
    "incident",
    "alert",
    "metric",
    "dashboard",
    "cluster",
    "node",
    "pod",
    "volume",
    "backup",
    "snapshot",
    "release",
    "version",
    "feature",
    "flag",
    "rollout",
    "canary",
    "error",
    "warning",
    "trace",
    "span",
    "log",
    "event",
    "stream",
    "buffer",
    "parser",
    "encoder",
    "payload",
    "header",
    "cookie",
    "token",
    "secret",
    "policy",
    "role",
    "permission",
    "user",
    "team",
    "project",
    "roadmap",
    "meeting",
    "calendar",
    "reminder",
    "draft",
    "email",
    "document",
    "spreadsheet",
    "chart",
    "query",
    "filter",
    "sort",
    "limit",
    "offset",
    "page",
    "cursor",
    "window",
    "bucket",
    "shard",
    "replica",
    "leader",
    "follower",
    "lock",
    "lease",
    "heartbeat",
    "probe",
    "health",
    "status",
    "uptime",
    "quota",
    "rate",
    "spike",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "for",
    "with",
    "on",
    "from",
    "by",
    "is",
    "was",
    "it",
];

const IDENTS: &[&str] = &[
    "session", "usage", "totals", "entry", "cfg", "store", "path", "cursor", "buf", "line", "model",
    "provider", "cost", "req", "resp", "ctx", "state", "cache", "key", "value",
];

const EXTS: &[&str] = &["rs", "ts", "json", "md", "py", "toml", "yaml", "sh"];

const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];

const ODD: &[&str] = &["café", "naïve", "→", "✓", "日本語", "über", "😀", "—", "±", "µs"];

fn word(r: &mut Rng) -> &'static str {
    r.pick(WORDS)
}

fn sentence(r: &mut Rng, out: &mut String) {
    let n = r.range(6, 18);
    for i in 0..n {
        let w: &str = if r.chance(0.01) { r.pick(ODD) } else { word(r) };
        if i == 0 {
            let mut cs = w.chars();
            if let Some(c) = cs.next() {
                out.extend(c.to_uppercase());
                out.push_str(cs.as_str());
            }
        } else {
            out.push(' ');
            if r.chance(0.03) {
                let _ = write!(out, "\"{w}\"");
                continue;
            }
            out.push_str(w);
        }
        if i + 1 < n && r.chance(0.08) {
            out.push(',');
        }
    }
    out.push_str(if r.chance(0.15) { "?" } else { "." });
}

fn build_prose(r: &mut Rng) -> String {
    let mut s = String::with_capacity(POOL_BYTES + 256);
    while s.len() < POOL_BYTES {
        sentence(r, &mut s);
        s.push_str(if r.chance(0.12) { "\n\n" } else { " " });
    }
    s
}

fn build_code(r: &mut Rng) -> String {
    let mut s = String::with_capacity(POOL_BYTES + 256);
    while s.len() < POOL_BYTES {
        let depth = r.below(4) as usize;
        let indent = if r.chance(0.1) { "\t".repeat(depth) } else { "    ".repeat(depth) };
        let (a, b, c) = (r.pick(IDENTS), r.pick(IDENTS), r.pick(IDENTS));
        let _ = match r.below(8) {
            0 => writeln!(s, "{indent}let {a}_{b} = {c}.{a}(&{b})?;"),
            1 => writeln!(s, "{indent}if {a}.is_empty() {{ return Err(Error::{b}); }}"),
            2 => writeln!(s, "{indent}const {a}: &str = \"{}-{}\";", word(r), word(r)),
            3 => {
                s.push_str(&indent);
                s.push_str("// ");
                sentence(r, &mut s);
                s.push('\n');
                Ok(())
            }
            4 => writeln!(s, "{indent}\"{a}\": \"{} {}\",", word(r), word(r)),
            5 => writeln!(s, "{indent}path = \"C:\\\\Users\\\\{a}\\\\{b}.{}\"", r.pick(EXTS)),
            6 => writeln!(s, "{indent}fn {a}_{b}({c}: &{a}) -> Result<{b}> {{"),
            _ => writeln!(s, "{indent}}}"),
        };
    }
    s
}

fn build_log(r: &mut Rng) -> String {
    let mut s = String::with_capacity(POOL_BYTES + 256);
    while s.len() < POOL_BYTES {
        let _ = match r.below(4) {
            0 => writeln!(
                s,
                "-rw-r--r--  1 user user {:>7} May {:>2} {:02}:{:02} {}_{}.{}",
                r.range(80, 900_000),
                r.range(1, 31),
                r.below(24),
                r.below(60),
                word(r),
                word(r),
                r.pick(EXTS)
            ),
            1 => writeln!(
                s,
                "test {}::{}_{} ... {}",
                word(r),
                word(r),
                word(r),
                if r.chance(0.9) { "ok" } else { "FAILED" }
            ),
            _ => {
                let _ = write!(
                    s,
                    "2026-05-{:02}T{:02}:{:02}:{:02}.{:03}Z {:<5} {}::{}: ",
                    r.range(1, 28),
                    r.below(24),
                    r.below(60),
                    r.below(60),
                    r.below(1000),
                    r.pick(LEVELS),
                    word(r),
                    word(r)
                );
                sentence(r, &mut s);
                writeln!(s, " ({}ms)", r.range(1, 4000))
            }
        };
    }
    s
}

fn build_web(r: &mut Rng) -> String {
    let mut s = String::with_capacity(POOL_BYTES + 256);
    let mut n = 1;
    while s.len() < POOL_BYTES {
        let _ = write!(s, "{n}. ");
        sentence(r, &mut s);
        let _ = writeln!(
            s,
            " — https://{}.example.com/{}/{}?q={}&page={}",
            word(r),
            word(r),
            word(r),
            word(r),
            r.range(1, 9)
        );
        for _ in 0..r.range(1, 3) {
            sentence(r, &mut s);
            s.push(' ');
        }
        s.push_str("\n\n");
        n = if n >= 10 { 1 } else { n + 1 };
    }
    s
}

fn pools() -> &'static Pools {
    static POOLS: OnceLock<Pools> = OnceLock::new();
    POOLS.get_or_init(|| {
        let mut r = Rng::new(0x00c1_a3ea_7e00_0001);
        Pools {
            prose: build_prose(&mut r),
            code: build_code(&mut r),
            log: build_log(&mut r),
            web: build_web(&mut r),
        }
    })
}

fn is_break(b: u8) -> bool {
    b == b' ' || b == b'\n'
}

/// About `len` bytes of `flavor` text, cut at whitespace (so always valid UTF-8).
pub(crate) fn slice(r: &mut Rng, flavor: Flavor, len: usize) -> Cow<'static, str> {
    let p = pools();
    let pool = match flavor {
        Flavor::Prose => &p.prose,
        Flavor::Code => &p.code,
        Flavor::Log => &p.log,
        Flavor::Web => &p.web,
    };
    if len == 0 {
        return Cow::Borrowed("");
    }
    let chunk_max = pool.len() / 4;
    if len > chunk_max {
        let mut s = String::with_capacity(len + 64);
        while s.len() < len {
            let want = (len - s.len()).min(chunk_max);
            s.push_str(slice_within(r, pool, want, false));
            s.push('\n');
        }
        return Cow::Owned(s);
    }
    Cow::Borrowed(slice_within(r, pool, len, flavor == Flavor::Prose))
}

/// Like [`slice`] with a length drawn uniformly from `lo..=hi` bytes.
pub(crate) fn slice_between(r: &mut Rng, flavor: Flavor, lo: u64, hi: u64) -> Cow<'static, str> {
    let len = r.range(lo, hi) as usize;
    slice(r, flavor, len)
}

/// A slice of about `len` bytes starting after a break (so on a word and a char boundary),
/// and for prose after the end of a sentence, so chat text reads like sentences.
fn slice_within<'a>(r: &mut Rng, pool: &'a str, len: usize, sentence: bool) -> &'a str {
    let bytes = pool.as_bytes();
    let mut start = r.below((bytes.len() - len) as u64) as usize;
    let ends_sentence = |i: usize| i > 0 && matches!(bytes[i - 1], b'.' | b'?');
    while start < bytes.len() && !(is_break(bytes[start]) && (!sentence || ends_sentence(start))) {
        start += 1;
    }
    start = (start + 1).min(bytes.len());
    let mut end = (start + len).min(bytes.len());
    while end < bytes.len() && !is_break(bytes[end]) {
        end += 1;
    }
    &pool[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_have_about_the_requested_size() {
        let mut r = Rng::new(9);
        for flavor in [Flavor::Prose, Flavor::Code, Flavor::Log, Flavor::Web] {
            for len in [1usize, 50, 6000, 900_000] {
                let s = slice(&mut r, flavor, len);
                assert!(s.len() >= len.min(10) && s.len() <= len + 200, "{len}: {}", s.len());
            }
        }
    }

    #[test]
    fn pools_contain_characters_that_need_escaping() {
        let p = pools();
        assert!(p.code.contains('"') && p.code.contains('\\') && p.code.contains('\t'));
        assert!(!p.prose.is_ascii());
    }
}
