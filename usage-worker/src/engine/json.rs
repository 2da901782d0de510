//! A pull cursor over one JSON text: as strict as serde_json (the same grammar; numbers out of
//! `f64` range and lone surrogates refused where a value is read, not where it is skipped; no
//! nesting limit when skipping), but it skips what usage never reads (message text, tool output,
//! thinking: most of a transcript's bytes) in 64-byte blocks (SSE2, or AVX2 where the CPU has
//! it; byte by byte elsewhere). A string that ends within 32 bytes without an escape (most keys,
//! ids and times) is found with one look, inlined where it is read or skipped.
//!
//! Why not serde_json's own skipping: on a cold read of the seed store it was 40% of the worker's
//! time, because its scan stops and re-enters at every escape (`\n`, `\"`), and tool output is
//! full of them (BENCHMARKS.md). Here a block's escapes are found with bit arithmetic.
//!
//! Strings that are only skipped are checked for JSON validity (escapes, control characters), not
//! for UTF-8: the cursor records whether it passed any byte ≥ 0x80 ([`Cursor::saw_non_ascii`]),
//! so that the caller validates the whole text once, and only then. Text whose validity does not
//! matter (OpenClaw's bookkeeping beside a projection) is passed by its structure alone
//! ([`Cursor::pass`]): brackets matched outside strings, 64 bytes per step.

use std::borrow::Cow;

#[cfg(target_arch = "x86_64")]
use sse2::Masks;

/// The text is not valid JSON (or a string to keep is not UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad;

pub type R<T> = Result<T, Bad>;

pub struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
    /// OR of the bytes' high bits seen while scanning strings (over-approximate: a whole block).
    high: u32,
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b, i: 0, high: 0 }
    }

    /// Whether any byte ≥ 0x80 may have been passed: then the text's UTF-8 is still to be checked.
    pub fn saw_non_ascii(&self) -> bool {
        self.high != 0
    }

    /// The next byte after whitespace, not consumed; the end of the text is an error.
    #[inline]
    pub fn peek(&mut self) -> R<u8> {
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b' ' | b'\n' | b'\r' | b'\t' => self.i += 1,
                _ => return Ok(c),
            }
        }
        Err(Bad)
    }

    /// Only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.peek().is_err()
    }

    /// The offset of the next byte to read.
    pub fn pos(&self) -> usize {
        self.i
    }

    /// Moves to offset `i`, which the caller knows to be where a value or separator starts.
    pub fn seek(&mut self, i: usize) {
        self.i = i.min(self.b.len());
    }

    /// Consumes `c` after whitespace; anything else is an error.
    #[inline]
    pub fn expect(&mut self, c: u8) -> R<()> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(Bad)
        }
    }

    /// `true`, `false` or `null` at the cursor.
    pub fn literal(&mut self) -> R<()> {
        let word: &[u8] = match self.b.get(self.i) {
            Some(b't') => b"true",
            Some(b'f') => b"false",
            Some(b'n') => b"null",
            _ => return Err(Bad),
        };
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Bad)
        }
    }

    /// Walks the object at the cursor: `f` gets each key (raw bytes, unescaped only when it had
    /// escapes) and must consume its value.
    pub fn object(&mut self, mut f: impl FnMut(&mut Self, Cow<'a, [u8]>) -> R<()>) -> R<()> {
        self.items(b'{', b'}', |c| {
            let key = c.key()?;
            c.expect(b':')?;
            f(c, key)
        })
    }

    /// Walks the array at the cursor: `f` must consume each element.
    pub fn array(&mut self, f: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        self.items(b'[', b']', f)
    }

    /// `open`, then items separated by commas (`item` consumes one), then `close`.
    fn items(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        self.expect(open)?;
        if self.peek()? == close {
            self.i += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                c if c == close => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Bad),
            }
        }
    }

    fn key(&mut self) -> R<Cow<'a, [u8]>> {
        if self.peek()? != b'"' {
            return Err(Bad);
        }
        self.string_bytes()
    }

    /// The string at the cursor, unescaped, as UTF-8.
    pub fn string(&mut self) -> R<Cow<'a, str>> {
        if self.peek()? != b'"' {
            return Err(Bad);
        }
        let high_before = std::mem::replace(&mut self.high, 0);
        let bytes = self.string_bytes()?;
        let ascii = self.high == 0;
        self.high |= high_before;
        match bytes {
            // SAFETY: every byte of the string went through `scan`, which saw no byte ≥ 0x80:
            // ASCII is UTF-8. (Checking each kept string again was 5% of a cold read.)
            Cow::Borrowed(b) if ascii => Ok(Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(b) })),
            Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed).map_err(|_| Bad),
            Cow::Owned(v) => String::from_utf8(v).map(Cow::Owned).map_err(|_| Bad),
        }
    }

    /// The string at the opening quote, unescaped (borrowed unless it has escapes).
    #[inline(always)]
    fn string_bytes(&mut self) -> R<Cow<'a, [u8]>> {
        self.i += 1;
        let start = self.i;
        if let Some(end) = self.short_string_end() {
            self.i = end + 1;
            return Ok(Cow::Borrowed(&self.b[start..end]));
        }
        self.long_string_bytes()
    }

    /// [`Self::string_bytes`] of a string that is long or has escapes.
    #[inline(never)]
    fn long_string_bytes(&mut self) -> R<Cow<'a, [u8]>> {
        let start = self.i;
        let mut owned: Option<Vec<u8>> = None;
        let mut from = start;
        loop {
            let j = self.scan()?;
            match self.b[j] {
                b'"' => {
                    self.i = j + 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(&self.b[start..j]),
                        Some(mut v) => {
                            v.extend_from_slice(&self.b[from..j]);
                            Cow::Owned(v)
                        }
                    });
                }
                b'\\' => {
                    let v = owned.get_or_insert_with(Vec::new);
                    v.extend_from_slice(&self.b[from..j]);
                    self.i = j + 1;
                    self.unescape(v)?;
                    from = self.i;
                }
                _ => return Err(Bad),
            }
        }
    }

    /// One escape after its backslash, appended to `out` as UTF-8 (surrogates must pair).
    fn unescape(&mut self, out: &mut Vec<u8>) -> R<()> {
        let c = *self.b.get(self.i).ok_or(Bad)?;
        self.i += 1;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let n = self.hex4()?;
                match n {
                    0xD800..=0xDBFF => {
                        if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                            return Err(Bad);
                        }
                        self.i += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(Bad);
                        }
                        char::from_u32(0x10000 + ((n - 0xD800) << 10) + (lo - 0xDC00)).ok_or(Bad)?
                    }
                    _ => char::from_u32(n).ok_or(Bad)?,
                }
            }
            _ => return Err(Bad),
        };
        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }

    fn hex4(&mut self) -> R<u32> {
        let h = self.b.get(self.i..self.i + 4).ok_or(Bad)?;
        let mut n = 0;
        for &c in h {
            n = n * 16 + (c as char).to_digit(16).ok_or(Bad)?;
        }
        self.i += 4;
        Ok(n)
    }

    /// Skips the string at its opening quote, checking escapes and control characters.
    #[inline(always)]
    fn skip_string(&mut self) -> R<()> {
        self.i += 1;
        // Most skipped strings are short (ids, times, keys, names): handled here, inlined,
        // instead of in a call that saves every register the block skip needs.
        if let Some(end) = self.short_string_end() {
            self.i = end + 1;
            return Ok(());
        }
        self.skip_long_string()
    }

    /// The closing quote's offset when it is the first `"`, `\` or control character of the
    /// next 32 bytes (the string then has no escape); bytes ≥ 0x80 before it are recorded.
    #[inline(always)]
    fn short_string_end(&mut self) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        {
            let (n, high) = sse2::first_stop32(self.b, self.i)?;
            if self.b[self.i + n] == b'"' {
                self.high |= u32::from(high);
                return Some(self.i + n);
            }
        }
        None
    }

    /// [`Self::skip_string`] past its first 32 bytes' worth, or with escapes.
    #[inline(never)]
    fn skip_long_string(&mut self) -> R<()> {
        #[cfg(target_arch = "x86_64")]
        {
            let done = if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: this CPU has AVX2 (checked just above).
                unsafe { self.skip_blocks_avx2() }
            } else {
                self.skip_blocks(sse2::masks)
            };
            if let Some(done) = done {
                return done;
            }
        }
        self.skip_string_bytes()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn skip_blocks_avx2(&mut self) -> Option<R<()>> {
        self.skip_blocks(|block| avx2::masks(block))
    }

    /// The string's body 64 bytes per step, escapes found with bit arithmetic instead of a branch
    /// each (tool output has one every ~40 bytes). `None`: the rest is left to
    /// [`Self::skip_string_bytes`] (fewer than 64 bytes, or a `\u` escape).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn skip_blocks(&mut self, masks: impl Fn(&[u8; 64]) -> Masks) -> Option<R<()>> {
        // The last byte was an escaping `\`.
        let mut carry = 0u64;
        while let Some(block) = self.b[self.i..].first_chunk::<64>() {
            let m = masks(block);
            self.high |= u32::from(m.high != 0);
            let carry_in = carry;
            let escaped = escaped_bytes(m.backslash, &mut carry);
            let close = m.quote & !escaped;
            // The bits before the closing quote (all, when it is not in this block).
            let inside = if close == 0 { !0 } else { (close & close.wrapping_neg()) - 1 };
            if m.control & inside != 0 {
                return Some(Err(Bad));
            }
            let mut esc = escaped & inside;
            let mut unicode = false;
            while esc != 0 {
                match ESCAPE[block[esc.trailing_zeros() as usize] as usize] {
                    SIMPLE => {}
                    UNICODE => unicode = true,
                    _ => return Some(Err(Bad)),
                }
                esc &= esc - 1;
            }
            if unicode {
                // `\uXXXX` may cross blocks and its digits must be checked: byte by byte from
                // this block's start (or from the `\` escaping its first byte).
                self.i -= carry_in as usize;
                return None;
            }
            if close != 0 {
                self.i += close.trailing_zeros() as usize + 1;
                return Some(Ok(()));
            }
            self.i += 64;
        }
        // Fewer than 64 bytes left: from the `\` escaping the next byte, if there is one.
        self.i -= carry as usize;
        None
    }

    /// The rest of a string, one `scan` hit at a time.
    fn skip_string_bytes(&mut self) -> R<()> {
        loop {
            let j = self.scan()?;
            match self.b[j] {
                b'"' => {
                    self.i = j + 1;
                    return Ok(());
                }
                b'\\' => {
                    self.i = j + 1;
                    match self.b.get(self.i) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            self.hex4()?;
                        }
                        _ => return Err(Bad),
                    }
                }
                _ => return Err(Bad),
            }
        }
    }

    /// The first `"`, `\` or control character at or after the cursor.
    #[inline]
    fn scan(&mut self) -> R<usize> {
        let (found, high) = scan(self.b, self.i);
        self.high |= high;
        found.ok_or(Bad)
    }

    /// The number at the cursor; out of `f64` range is an error (as in serde_json).
    pub fn number(&mut self) -> R<f64> {
        let start = self.i;
        let n = self.scan_number()?;
        // Token counts, costs and epoch milliseconds: a mantissa below 2^53 with at most 22
        // decimals and no exponent is `m / 10^k` of two exact doubles, one correctly rounded
        // division (Clinger's fast path), so no decimal conversion is needed (it was 5% of a
        // cold read).
        if !n.exponent && n.digits <= 19 && n.mantissa < 1 << 53 && n.decimals <= 22 {
            let v = n.mantissa as f64 / POW10[n.decimals as usize];
            return Ok(if n.negative { -v } else { v });
        }
        // SAFETY: `scan_number` accepted only ASCII digits, signs, `.`, `e` and `E`.
        let text = unsafe { std::str::from_utf8_unchecked(&self.b[start..self.i]) };
        let v: f64 = text.parse().map_err(|_| Bad)?;
        if v.is_finite() { Ok(v) } else { Err(Bad) }
    }

    /// Checks the number at the cursor, `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, and
    /// passes it, gathering its decimal digits on the way.
    fn scan_number(&mut self) -> R<Number> {
        let b = self.b;
        let mut n = Number::default();
        let mut i = self.i;
        let digits = |i: &mut usize, n: &mut Number| {
            let s = *i;
            while let Some(d) = b.get(*i).filter(|d| d.is_ascii_digit()) {
                n.mantissa = n.mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                *i += 1;
            }
            n.digits += (*i - s) as u32;
            *i > s
        };
        if b.get(i) == Some(&b'-') {
            n.negative = true;
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => {
                n.digits = 1;
                i += 1;
            }
            Some(b'1'..=b'9') => {
                digits(&mut i, &mut n);
            }
            _ => return Err(Bad),
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            let before = n.digits;
            if !digits(&mut i, &mut n) {
                return Err(Bad);
            }
            n.decimals = n.digits - before;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            n.exponent = true;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !b.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(Bad);
            }
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        self.i = i;
        Ok(n)
    }

    /// Skips any value, checking it without recursion: a bit per open container, so any depth a
    /// line can hold is fine (serde_json skips without a limit too).
    pub fn skip(&mut self) -> R<()> {
        // Bit k: the k-th innermost open container is an object; every 128 levels spill.
        let mut stack: u128 = 0;
        let mut spill: Vec<u128> = Vec::new();
        let mut open = 0usize;
        loop {
            // A value.
            match self.peek()? {
                b'"' => self.skip_string()?,
                b'-' | b'0'..=b'9' => {
                    self.scan_number()?;
                }
                c @ (b'{' | b'[') => {
                    self.i += 1;
                    if open > 0 && open % 128 == 0 {
                        spill.push(stack);
                    }
                    open += 1;
                    stack = (stack << 1) | u128::from(c == b'{');
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek()? != close {
                        if c == b'{' {
                            self.skip_key()?;
                        }
                        continue;
                    }
                    // Empty: closed below.
                }
                _ => self.literal()?,
            }
            // After a value: commas and closers until the next value or the end.
            loop {
                if open == 0 {
                    return Ok(());
                }
                let is_obj = stack & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if is_obj {
                            self.skip_key()?;
                        }
                        break;
                    }
                    b'}' if is_obj => {}
                    b']' if !is_obj => {}
                    _ => return Err(Bad),
                }
                self.i += 1;
                open -= 1;
                stack >>= 1;
                if open > 0 && open % 128 == 0 {
                    stack = spill.pop().expect("spilled at this depth");
                }
            }
        }
    }

    /// Passes the value at the cursor by its structure alone, for text that is never read: a
    /// string to its closing quote (escapes passed over, not checked), brackets matched, a scalar
    /// up to the next `,`, `}`, `]` or whitespace. Valid JSON ends where [`Cursor::skip`] ends
    /// it; text it would refuse may pass, if balanced. Nesting deeper than 128 is refused.
    /// Bytes ≥ 0x80 passed are not recorded ([`Cursor::saw_non_ascii`]).
    pub fn pass(&mut self) -> R<()> {
        #[cfg(target_arch = "x86_64")]
        if matches!(self.peek()?, b'{' | b'[') {
            return self.pass_container(self.i);
        }
        self.pass_bytes()
    }

    /// [`Cursor::pass`] a byte at a time (strings a scan at a time).
    fn pass_bytes(&mut self) -> R<()> {
        let b = self.b;
        self.peek()?;
        let mut i = self.i;
        // Bit k: the k-th innermost open container is an object.
        let (mut stack, mut open) = (0u128, 0u32);
        loop {
            match *b.get(i).ok_or(Bad)? {
                b'"' => loop {
                    // (A backslash can be the text's last byte.)
                    if i >= b.len() {
                        return Err(Bad);
                    }
                    let j = scan(b, i + 1).0.ok_or(Bad)?;
                    match b[j] {
                        b'"' => {
                            i = j + 1;
                            break;
                        }
                        // Whatever it escapes is passed with it; a control byte is passed.
                        b'\\' => i = j + 1,
                        _ => i = j,
                    }
                },
                c @ (b'{' | b'[') => {
                    if open == 128 {
                        return Err(Bad);
                    }
                    stack = (stack << 1) | u128::from(c == b'{');
                    open += 1;
                    i += 1;
                    continue;
                }
                c @ (b'}' | b']') => {
                    if open == 0 || (stack & 1 == 1) != (c == b'}') {
                        return Err(Bad);
                    }
                    stack >>= 1;
                    open -= 1;
                    i += 1;
                }
                _ if open > 0 => {
                    i += 1;
                    continue;
                }
                _ => {
                    let start = i;
                    while b
                        .get(i)
                        .is_some_and(|c| !matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                    {
                        i += 1;
                    }
                    if i == start {
                        return Err(Bad);
                    }
                }
            }
            if open == 0 {
                self.i = i;
                return Ok(());
            }
        }
    }

    /// [`Cursor::pass`] of the object or array at `start`, 64 bytes per step: the brackets
    /// outside strings found with bit arithmetic (strings by their unescaped quotes, as in
    /// simdjson), then matched one by one.
    #[cfg(target_arch = "x86_64")]
    fn pass_container(&mut self, start: usize) -> R<()> {
        let b = self.b;
        // Bit k: the k-th innermost open container is an object.
        let (mut stack, mut open) = (0u128, 0u32);
        // The last block ended with an escaping `\`; inside a string (all ones).
        let (mut escape, mut in_string) = (0u64, 0u64);
        let mut p = start;
        loop {
            let mut padded = [b' '; 64];
            let block: &[u8; 64] = match b.get(p..p + 64) {
                Some(s) => s.try_into().expect("64 bytes"),
                None => {
                    let rest = b.get(p..).filter(|r| !r.is_empty()).ok_or(Bad)?;
                    padded[..rest.len()].copy_from_slice(rest);
                    &padded
                }
            };
            let m = sse2::structure(block);
            let quotes = m.quote & !escaped_bytes(m.backslash, &mut escape);
            let inside = prefix_xor(quotes) ^ in_string;
            in_string = 0u64.wrapping_sub(inside >> 63);
            let mut brackets = (m.open | m.close) & !inside;
            while brackets != 0 {
                let k = brackets.trailing_zeros();
                brackets &= brackets - 1;
                let curly = m.curly >> k & 1 == 1;
                if m.open >> k & 1 == 1 {
                    if open == 128 {
                        return Err(Bad);
                    }
                    stack = (stack << 1) | u128::from(curly);
                    open += 1;
                } else {
                    if open == 0 || (stack & 1 == 1) != curly {
                        return Err(Bad);
                    }
                    stack >>= 1;
                    open -= 1;
                    if open == 0 {
                        self.i = p + k as usize + 1;
                        return Ok(());
                    }
                }
            }
            if p + 64 >= b.len() {
                return Err(Bad);
            }
            p += 64;
        }
    }

    /// Skips the value at the cursor and returns its text (without surrounding whitespace).
    pub fn raw_value(&mut self) -> R<&'a [u8]> {
        self.peek()?;
        let start = self.i;
        self.skip()?;
        Ok(&self.b[start..self.i])
    }

    fn skip_key(&mut self) -> R<()> {
        if self.peek()? != b'"' {
            return Err(Bad);
        }
        self.skip_string()?;
        self.expect(b':')
    }

    /// Skips a string at the cursor without unescaping it; anything else is an error.
    pub fn skip_str(&mut self) -> R<()> {
        if self.peek()? != b'"' {
            return Err(Bad);
        }
        self.skip_string()
    }
}

/// The index of the first `"`, `\` or byte < 0x20 in `b[from..]`, and a non-zero value if a
/// byte ≥ 0x80 may lie before it.
#[inline]
fn scan(b: &[u8], from: usize) -> (Option<usize>, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::scan(b, from)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        scan_words(b, from)
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::*;

    /// One 64-byte block's bytes of interest, a bit each.
    pub struct Masks {
        pub quote: u64,
        pub backslash: u64,
        /// Bytes < 0x20.
        pub control: u64,
        /// Bytes ≥ 0x80.
        pub high: u64,
    }

    #[inline]
    pub fn masks(block: &[u8; 64]) -> Masks {
        let mut m = Masks { quote: 0, backslash: 0, control: 0, high: 0 };
        // SAFETY: SSE2 is in the x86_64 baseline; the four unaligned loads read the block's 64
        // bytes.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let slash = _mm_set1_epi8(b'\\' as i8);
            let ctl = _mm_set1_epi8(0x1f);
            for k in 0..4 {
                let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast());
                let bits = |x| u64::from(_mm_movemask_epi8(x) as u16) << (16 * k);
                m.quote |= bits(_mm_cmpeq_epi8(v, quote));
                m.backslash |= bits(_mm_cmpeq_epi8(v, slash));
                m.control |= bits(_mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl));
                m.high |= bits(v);
            }
        }
        m
    }

    /// One 64-byte block's quotes, backslashes and brackets, a bit each.
    pub struct Structure {
        pub quote: u64,
        pub backslash: u64,
        /// `{` and `[`.
        pub open: u64,
        /// `}` and `]`.
        pub close: u64,
        /// `{` and `}`.
        pub curly: u64,
    }

    #[inline]
    pub fn structure(block: &[u8; 64]) -> Structure {
        let mut m = Structure { quote: 0, backslash: 0, open: 0, close: 0, curly: 0 };
        // SAFETY: SSE2 is in the x86_64 baseline; the four unaligned loads read the block's 64
        // bytes.
        unsafe {
            let [quote, slash, lc, rc, ls, rs] =
                [b'"', b'\\', b'{', b'}', b'[', b']'].map(|c| _mm_set1_epi8(c as i8));
            for k in 0..4 {
                let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast());
                let bits = |x| u64::from(_mm_movemask_epi8(x) as u16) << (16 * k);
                let (l, r) = (_mm_cmpeq_epi8(v, lc), _mm_cmpeq_epi8(v, rc));
                m.quote |= bits(_mm_cmpeq_epi8(v, quote));
                m.backslash |= bits(_mm_cmpeq_epi8(v, slash));
                m.open |= bits(_mm_or_si128(l, _mm_cmpeq_epi8(v, ls)));
                m.close |= bits(_mm_or_si128(r, _mm_cmpeq_epi8(v, rs)));
                m.curly |= bits(_mm_or_si128(l, r));
            }
        }
        m
    }

    /// The 16 bytes at `p`, a bit each: those a string scan stops at (`"`, `\` or < 0x20),
    /// and those ≥ 0x80.
    ///
    /// # Safety
    /// `p` must be valid for reading 16 bytes (no alignment needed).
    #[inline(always)]
    unsafe fn stops16(p: *const u8) -> (u32, u32) {
        // SAFETY: SSE2 is in the x86_64 baseline; the caller vouches for the 16 bytes.
        unsafe {
            let v = _mm_loadu_si128(p.cast());
            let ctl = _mm_set1_epi8(0x1f);
            let hit = _mm_or_si128(
                _mm_or_si128(
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
                ),
                // v ≤ 0x1f unsigned.
                _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl),
            );
            (_mm_movemask_epi8(hit) as u32, _mm_movemask_epi8(v) as u32)
        }
    }

    /// The offset of the first byte [`stops16`] stops at among the 32 at `b[i..]`, and whether a
    /// byte ≥ 0x80 lies before it. The second 16 are looked at only when the first 16 have no
    /// stop: most strings (keys, ids, names) end within them. `None`: no stop in the halves
    /// that fit in `b`.
    #[inline(always)]
    pub fn first_stop32(b: &[u8], i: usize) -> Option<(usize, bool)> {
        let first = b.get(i..i + 16)?;
        // SAFETY: `first` holds 16 bytes.
        let (hit, high) = unsafe { stops16(first.as_ptr()) };
        if hit != 0 {
            let n = hit.trailing_zeros() as usize;
            return Some((n, high & ((1 << n) - 1) != 0));
        }
        let second = b.get(i + 16..i + 32)?;
        // SAFETY: `second` holds 16 bytes.
        let (hit, high2) = unsafe { stops16(second.as_ptr()) };
        if hit == 0 {
            return None;
        }
        let n = hit.trailing_zeros() as usize;
        Some((16 + n, high != 0 || high2 & ((1 << n) - 1) != 0))
    }

    /// Sixteen bytes per step (SSE2 is part of every x86_64 CPU, so no detection is needed).
    #[inline]
    pub fn scan(b: &[u8], from: usize) -> (Option<usize>, u32) {
        let mut i = from;
        let mut high = 0u32;
        while i + 16 <= b.len() {
            // SAFETY: b[i..i + 16] is in bounds by the loop condition.
            let (mask, h) = unsafe { stops16(b.as_ptr().add(i)) };
            high |= h;
            if mask != 0 {
                return (Some(i + mask.trailing_zeros() as usize), high);
            }
            i += 16;
        }
        let (found, tail_high) = super::scan_bytes(b, i);
        (found, high | tail_high)
    }
}

/// 32 bytes per load, for CPUs that have AVX2 (detected at run time).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::sse2::Masks;

    #[target_feature(enable = "avx2")]
    pub fn masks(block: &[u8; 64]) -> Masks {
        let mut m = Masks { quote: 0, backslash: 0, control: 0, high: 0 };
        let quote = _mm256_set1_epi8(b'"' as i8);
        let slash = _mm256_set1_epi8(b'\\' as i8);
        let ctl = _mm256_set1_epi8(0x1f);
        for k in 0..2 {
            // SAFETY: reads block[32k..32k + 32], inside the 64-byte block (unaligned load).
            let v = unsafe { _mm256_loadu_si256(block.as_ptr().add(32 * k).cast()) };
            let bits = |x| u64::from(_mm256_movemask_epi8(x) as u32) << (32 * k);
            m.quote |= bits(_mm256_cmpeq_epi8(v, quote));
            m.backslash |= bits(_mm256_cmpeq_epi8(v, slash));
            m.control |= bits(_mm256_cmpeq_epi8(_mm256_max_epu8(v, ctl), ctl));
            m.high |= bits(v);
        }
        m
    }
}

/// The portable scan: eight bytes per step (SWAR).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn scan_words(b: &[u8], from: usize) -> (Option<usize>, u32) {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    let mut high = 0u64;
    while let Some(w) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        let has_zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
        // Bytes < 0x20: (w - 0x20) borrows into the high bit; bytes ≥ 0x80 excluded by `!w`.
        let hit = has_zero(w ^ (LO * u64::from(b'"')))
            | has_zero(w ^ (LO * u64::from(b'\\')))
            | (w.wrapping_sub(LO * 0x20) & !w & HI);
        high |= w & HI;
        if hit != 0 {
            // The lowest set marker is exact (borrows only propagate upwards).
            return (Some(i + (hit.trailing_zeros() / 8) as usize), u32::from(high != 0));
        }
        i += 8;
    }
    let (found, tail_high) = scan_bytes(b, i);
    (found, tail_high | u32::from(high != 0))
}

fn scan_bytes(b: &[u8], from: usize) -> (Option<usize>, u32) {
    let mut high = 0u32;
    for (k, &c) in b[from..].iter().enumerate() {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return (Some(from + k), high);
        }
        high |= u32::from(c >> 7);
    }
    (None, high)
}

/// A number's decimal digits as [`Cursor::scan_number`] gathers them (`mantissa` wraps past 19
/// digits; `digits` says when).
#[derive(Default)]
struct Number {
    negative: bool,
    mantissa: u64,
    digits: u32,
    decimals: u32,
    exponent: bool,
}

/// 10^0 ..= 10^22, each exact in an `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
];

/// What a byte after an escaping `\` may be: one of `"\/bfnrt`, or `u` and four hex digits.
#[cfg(target_arch = "x86_64")]
const SIMPLE: u8 = 1;
#[cfg(target_arch = "x86_64")]
const UNICODE: u8 = 2;
#[cfg(target_arch = "x86_64")]
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let simple = b"\"\\/bfnrt";
    let mut k = 0;
    while k < simple.len() {
        t[simple[k] as usize] = SIMPLE;
        k += 1;
    }
    t[b'u' as usize] = UNICODE;
    t
};

/// The bytes of a 64-byte block (a bit each) that follow an escaping backslash; `carry` says
/// whether the block before ended with one, and is updated for the next. A run of backslashes
/// escapes the byte after it when its length is odd: simdjson's carry-less method
/// (Langdale & Lemire, "Parsing Gigabytes of JSON per Second", 2019).
#[cfg(target_arch = "x86_64")]
fn escaped_bytes(backslash: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let backslash = backslash & !*carry;
    let follows_escape = (backslash << 1) | *carry;
    let odd_starts = backslash & !EVEN & !follows_escape;
    let (even_starts, overflow) = odd_starts.overflowing_add(backslash);
    *carry = u64::from(overflow);
    (EVEN ^ (even_starts << 1)) & follows_escape
}

/// Bit k set when an odd number of `x`'s bits 0..=k are: over a block's unescaped quotes, the
/// bytes inside strings (each opening quote included, its closing one not).
#[cfg(target_arch = "x86_64")]
fn prefix_xor(mut x: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        x ^= x << shift;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(text: &str) -> bool {
        let mut c = Cursor::new(text.as_bytes());
        c.skip().is_ok() && c.at_end()
    }

    #[test]
    fn skip_accepts_exactly_what_serde_json_accepts() {
        let deep = |n| format!("{}{}", "[{\"a\":".repeat(n), "}]".repeat(n));
        let (deep_ok, deep_bad) = (deep(1000), format!("{}]", deep(300)));
        let cases = [
            r#"{"a":[1,-2.5e+3,true,false,null,{"b":"x\"\\\/\b\f\n\r\t\u00e9y"}],"c":{}}"#,
            r#"[]"#,
            r#" { "a" : [ ] , "b" : { } } "#,
            r#""\ud800""#,
            r#"0"#,
            r#"-0.0e-0"#,
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "nul",
            "\"a\tb\"",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"abc",
            "[1}",
            "{\"a\":1]",
            "\"é\"",
            &deep_ok,
            &deep_bad,
        ];
        for text in cases {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
            assert_eq!(valid(text), serde, "{text}");
        }
    }

    #[test]
    fn strings_unescape_like_serde_json() {
        for text in [r#""plain""#, r#""a\"b\\c\/\n\u00e9\ud83d\ude00""#, "\"caf\u{e9}\""] {
            let want: String = serde_json::from_str(text).unwrap();
            assert_eq!(Cursor::new(text.as_bytes()).string().unwrap(), want, "{text}");
        }
        for text in [r#""\ud800""#, r#""\udc00x""#, r#""\ud800\u0041""#, "\"\\u00\""] {
            assert!(serde_json::from_str::<String>(text).is_err());
            assert_eq!(Cursor::new(text.as_bytes()).string(), Err(Bad), "{text}");
        }
    }

    #[test]
    fn numbers_parse_like_serde_json() {
        for text in [
            "0",
            "-0",
            "12",
            "-7",
            "1794220593469",
            "999999999999999",
            "9999999999999999",
            "-9007199254740993",
            "1.5",
            "0.030564",
            "1e308",
            "1e-400",
            "18446744073709551617",
            "2.5E+2",
        ] {
            let want: f64 = serde_json::from_str(text).unwrap();
            let got = Cursor::new(text.as_bytes()).number().unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{text}");
        }
        for text in ["1e400", "-1e309"] {
            assert!(serde_json::from_str::<f64>(text).is_err());
            assert_eq!(Cursor::new(text.as_bytes()).number(), Err(Bad), "{text}");
        }
    }

    /// Where each way of passing a value ends it (`None`: refused).
    fn passes(text: &[u8]) -> Vec<Option<usize>> {
        let end = |r: R<()>, c: &Cursor<'_>| r.ok().map(|()| c.pos());
        let mut c = Cursor::new(text);
        let mut ends = vec![end(c.pass_bytes(), &c)];
        #[cfg(target_arch = "x86_64")]
        if let Ok(b'{' | b'[') = Cursor::new(text).peek() {
            let mut c = Cursor::new(text);
            let _ = c.peek();
            ends.push(end(c.pass_container(c.pos()), &c));
        }
        let mut c = Cursor::new(text);
        ends.push(end(c.pass(), &c));
        ends
    }

    /// A JSON value as serde_json prints it: strings with every escape, numbers of every form,
    /// nesting.
    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
            "[\\\\\"{}\\[\\]a-z\u{0}-\u{1f}\u{e9}\u{1F600} ]{0,80}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[\\\\\"{}a-z]{0,12}", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Valid values are passed exactly where they are skipped, whichever way, long strings and
    /// blocks with brackets in strings and escaped quotes included; what follows is not read.
    #[test]
    fn pass_ends_valid_values_where_skip_ends_them() {
        let long = format!(r#"{{"a":"{}\"}}]","b":[{{}},[]],"c":"{}"}}"#, "x".repeat(100), "\\".repeat(70));
        let cases = [
            r#"{"a":[1,-2.5e+3,true,false,null,{"b":"x\"\\\/\b\f\n\r\t\u00e9y"}],"c":{}}"#,
            "[]",
            " { \"a\" : [ ] , \"b\" : { } } ",
            r#""\ud800""#,
            "0",
            "-0.0e-0",
            r#""{[\"]}""#,
            &long,
        ];
        for text in cases {
            let mut c = Cursor::new(text.as_bytes());
            c.skip().unwrap();
            let want = c.pos();
            for (k, got) in passes(text.as_bytes()).into_iter().enumerate() {
                assert_eq!(got, Some(want), "way {k}: {text}");
            }
            let mut followed = text.to_owned();
            followed.push_str(r#","z":{"#);
            assert!(passes(followed.as_bytes()).iter().all(|e| *e == Some(want)), "{followed}");
        }
        // Unbalanced, cut short or too deep: refused.
        for text in ["{", "[1}", "{\"a\":1]", "{\"a\":\"}", "\"abc", "", " ", "]", &"[".repeat(200)] {
            assert!(passes(text.as_bytes()).iter().all(Option::is_none), "{text}");
        }
    }

    proptest::proptest! {
        /// Any value serde_json prints is passed where it ends: alone, and inside an array at
        /// every offset into the 64-byte blocks (which start at the array's bracket), so that its
        /// strings, escapes and brackets meet the block boundaries everywhere.
        #[test]
        fn pass_agrees_with_skip_on_printed_values(v in json_value(), pad in 0usize..70) {
            let printed = serde_json::to_vec(&v).unwrap();
            let mut alone = " ".repeat(pad).into_bytes();
            alone.extend_from_slice(&printed);
            let mut inside = format!("[{}", " ".repeat(pad)).into_bytes();
            inside.extend_from_slice(&printed);
            inside.push(b']');
            for mut text in [alone, inside] {
                let end = text.len();
                text.extend_from_slice(b"]}, \"tail\"");
                for got in passes(&text) {
                    proptest::prop_assert_eq!(got, Some(end));
                }
            }
        }

        /// Any bytes at all: no panic, and a value passed ends inside the text, after its start.
        #[test]
        fn pass_never_reads_past_the_text(
            bytes in proptest::collection::vec(proptest::sample::select(b"{}[]\"\\ ,:a1\xc3".to_vec()), 0..200)
        ) {
            for got in passes(&bytes).into_iter().flatten() {
                proptest::prop_assert!(got > 0 && got <= bytes.len());
            }
        }

        /// Numbers as transcripts hold them (token counts, costs, epoch milliseconds) and beyond
        /// the fast path (long mantissas, exponents): bit for bit what serde_json reads.
        #[test]
        fn numbers_read_bit_for_bit_like_serde_json(
            neg in proptest::bool::ANY,
            int in proptest::prop_oneof![0u64..10, 0u64..100_000, 0u64..u64::MAX],
            frac in "[0-9]{0,25}",
            exp in proptest::option::of(-330i32..330),
        ) {
            let mut text = format!("{}{int}", if neg { "-" } else { "" });
            if !frac.is_empty() {
                text = format!("{text}.{frac}");
            }
            if let Some(e) = exp {
                text = format!("{text}e{e}");
            }
            let want = serde_json::from_str::<f64>(&text).ok();
            let got = Cursor::new(text.as_bytes()).number().ok();
            proptest::prop_assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{}", text);
        }


        /// Strings read whole (keys, kept values) and skipped, short or long, with escapes or
        /// not, ASCII, UTF-8 or neither, ending anywhere in the text: read, they are what
        /// serde_json reads (or refused alike); skipped, they end where it ends them, and any
        /// byte ≥ 0x80 passed is reported (the caller's UTF-8 check depends on it).
        #[test]
        fn strings_read_and_skip_like_serde_json(
            body in proptest::collection::vec(proptest::sample::select(
                [b"\\\\\\\"uu0aF9nt/ \x01\xc3\xa9\xe2\x82\xac\xff".as_slice(), &[b'x'; 24]].concat()), 0..90),
            pad in 0usize..40,
        ) {
            let mut text = vec![b'"'];
            text.extend_from_slice(&body);
            text.push(b'"');
            text.extend(std::iter::repeat_n(b' ', pad));
            let want = serde_json::from_slice::<String>(&text).ok();
            let mut c = Cursor::new(&text);
            let got = c.string().map(Cow::into_owned).ok().filter(|_| c.at_end());
            proptest::prop_assert_eq!(&got, &want);
            let mut c = Cursor::new(&text);
            if c.skip_str().is_ok() {
                let end = c.pos();
                if text[..end].iter().any(|b| *b >= 0x80) {
                    proptest::prop_assert!(c.saw_non_ascii());
                }
                if want.is_some() {
                    proptest::prop_assert_eq!(end, text.len() - pad);
                }
            } else {
                proptest::prop_assert!(want.is_none());
            }
        }

        /// The 64-byte block skip against the byte-at-a-time one: the same verdict, the same end,
        /// on strings dense in backslashes, quotes, `\u` escapes and control bytes.
        #[test]
        fn block_skip_agrees_with_the_byte_skip(
            body in proptest::collection::vec(proptest::sample::select(
                [b"\\\\\\\"uu0aF9gnt/ \x01\xc3\xa9".as_slice(), &[b'x'; 60]].concat()), 0..400)
        ) {
            let mut text = vec![b'"'];
            text.extend_from_slice(&body);
            let mut slow = Cursor::new(&text);
            slow.i = 1;
            let slow = (slow.skip_string_bytes(), slow.i);
            let mut fast = Cursor::new(&text);
            let mut got = vec![(fast.skip_string(), fast.i)];
            #[cfg(target_arch = "x86_64")]
            {
                // Both block paths, whichever this CPU takes in `skip_string`.
                let mut sse2 = Cursor::new(&text);
                sse2.i = 1;
                let done = sse2.skip_blocks(sse2::masks).unwrap_or_else(|| sse2.skip_string_bytes());
                got.push((done, sse2.i));
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut avx2 = Cursor::new(&text);
                    avx2.i = 1;
                    // SAFETY: AVX2 was detected.
                    let done = unsafe { avx2.skip_blocks_avx2() }.unwrap_or_else(|| avx2.skip_string_bytes());
                    got.push((done, avx2.i));
                }
            }
            for fast in got {
                if slow.0.is_ok() {
                    proptest::prop_assert_eq!(fast, slow);
                } else {
                    proptest::prop_assert_eq!(fast.0, Err(Bad));
                }
            }
        }
    }

    #[test]
    fn the_scans_agree_at_every_offset() {
        let mut text = Vec::new();
        for k in 0..300u32 {
            text.push(match k % 37 {
                0 => b'"',
                5 => b'\\',
                11 => 0x1f,
                17 => 0xc3,
                _ => b'a' + (k % 26) as u8,
            });
        }
        for from in 0..text.len() {
            let (want, want_high) = scan_bytes(&text, from);
            let (words, words_high) = scan_words(&text, from);
            let (fast, fast_high) = scan(&text, from);
            assert_eq!((words, fast), (want, want), "from {from}");
            // The fast scans may over-report a high byte, never miss one before the hit.
            assert!(want_high == 0 || (words_high != 0 && fast_high != 0), "from {from}");
        }
    }
}
