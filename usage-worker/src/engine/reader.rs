//! Streaming line reader with a bounded buffer, plus the checkpoint anchor hash.
//!
//! A transcript can be gigabytes and a single tool result many megabytes, so a file is read in
//! 1 MiB `pread` chunks and split on `\n` with memchr. A line may grow the buffer up to
//! `max_line_bytes`; a longer one is skipped *without* being accumulated (the buffer is dropped
//! and bytes are discarded until its newline) and counted. A final line without `\n` is an
//! unterminated tail: it is not handed out, and the returned offset stays before it, so the
//! line is counted exactly once when its newline arrives.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Read size; also the buffer's starting size.
pub const CHUNK: usize = 1 << 20;
/// How many bytes may pass between two looks at the cancel flag.
const CANCEL_EVERY: u64 = 4 << 20;
/// How many bytes before a checkpoint offset the anchor hash covers.
pub const ANCHOR_LEN: u64 = 4096;

/// Why reading stopped early.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Cancelled,
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// What one read pass saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Offset just after the last complete line: the next pass starts here.
    pub end_offset: u64,
    /// Bytes read from the file in this pass.
    pub bytes_read: u64,
    /// Lines longer than the limit, skipped.
    pub oversize: u64,
    /// Whether bytes after `end_offset` form a line without a newline yet.
    pub pending_tail: bool,
}

/// Calls `on_line(line)` for every complete, non-oversize line from `start` to EOF.
/// The line excludes its `\n`.
pub fn read_lines(
    file: &File,
    start: u64,
    max_line: u64,
    cancel: &AtomicBool,
    mut on_line: impl FnMut(&[u8]),
) -> Result<ReadOutcome, ReadError> {
    BUFFER.with(|cell| {
        let mut buf = cell.take();
        if buf.len() < CHUNK {
            buf = vec![0u8; CHUNK];
        }
        let out = read_with(&mut buf, file, start, max_line, cancel, &mut on_line);
        // Keep one chunk for the next file; a buffer grown for a giant line goes.
        buf.truncate(CHUNK);
        buf.shrink_to(CHUNK);
        cell.set(buf);
        out
    })
}

thread_local! {
    /// Each parser thread's read buffer, reused from file to file: thousands of small files
    /// otherwise cost a fresh 1 MiB buffer (and its zeroing) each.
    static BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

fn read_with(
    buf: &mut Vec<u8>,
    file: &File,
    start: u64,
    max_line: u64,
    cancel: &AtomicBool,
    on_line: &mut impl FnMut(&[u8]),
) -> Result<ReadOutcome, ReadError> {
    let max_line = usize::try_from(max_line).unwrap_or(usize::MAX).max(1);
    let cap_limit = max_line.saturating_add(1).max(CHUNK);
    let mut pos = start; // file offset of buf[0]
    let mut len = 0usize; // valid bytes in buf
    let mut line_start = 0usize; // start of the current (incomplete) line in buf
    let mut skipping = false; // inside an oversize line whose head was dropped
    let mut out = ReadOutcome { end_offset: start, ..ReadOutcome::default() };
    let mut since_check = 0u64;
    loop {
        if line_start > 0 {
            buf.copy_within(line_start..len, 0);
            len -= line_start;
            pos += line_start as u64;
            line_start = 0;
        }
        if len == buf.len() {
            if buf.len() < cap_limit {
                let grown = (buf.len() * 2).min(cap_limit);
                buf.resize(grown, 0);
            } else {
                // Longer than the limit: forget what we have and skip to its newline.
                skipping = true;
                pos += len as u64;
                len = 0;
            }
        }
        let n = file.read_at(&mut buf[len..], pos + len as u64)?;
        if n == 0 {
            out.pending_tail = skipping || len > 0;
            return Ok(out);
        }
        out.bytes_read += n as u64;
        since_check += n as u64;
        if since_check >= CANCEL_EVERY {
            since_check = 0;
            if cancel.load(Ordering::Relaxed) {
                return Err(ReadError::Cancelled);
            }
        }
        let scan_from = len;
        len += n;
        for nl in memchr::memchr_iter(b'\n', &buf[scan_from..len]) {
            let end = scan_from + nl;
            if skipping {
                skipping = false;
                out.oversize += 1;
            } else if end - line_start > max_line {
                out.oversize += 1;
            } else {
                on_line(&buf[line_start..end]);
            }
            line_start = end + 1;
            out.end_offset = pos + line_start as u64;
        }
    }
}

/// FNV-1a over the (up to) [`ANCHOR_LEN`] bytes before `offset`, mixed with their length. Stable
/// across builds, so a persisted checkpoint stays comparable.
pub fn anchor_hash(file: &File, offset: u64) -> io::Result<u64> {
    let from = offset.saturating_sub(ANCHOR_LEN);
    let mut buf = [0u8; ANCHOR_LEN as usize];
    let buf = &mut buf[..(offset - from) as usize];
    file.read_exact_at(buf, from)?;
    Ok(fnv1a(buf))
}

/// FNV-1a from the offset basis xor the length (the persisted definition; do not change).
fn fnv1a(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::with_key(0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64);
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines_of(data: &[u8], start: u64, max: u64) -> (Vec<Vec<u8>>, ReadOutcome) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        let mut got = Vec::new();
        let out = read_lines(&f, start, max, &AtomicBool::new(false), |l| got.push(l.to_vec())).unwrap();
        (got, out)
    }

    #[test]
    fn splits_and_keeps_tail_pending() {
        let (got, out) = lines_of(b"a\nbb\n\nccc", 0, 100);
        assert_eq!(got, vec![b"a".to_vec(), b"bb".to_vec(), b"".to_vec()]);
        assert_eq!(out.end_offset, 6);
        assert!(out.pending_tail);
        let (got, out) = lines_of(b"a\nbb\n\nccc", 6, 100);
        assert!(got.is_empty());
        assert_eq!(out.end_offset, 6);
    }

    #[test]
    fn oversize_lines_are_skipped_without_buffering() {
        let mut data = b"ok\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 3 * CHUNK + 17));
        data.extend(b"\nfine\n");
        data.extend(b"0123456789\n");
        let (got, out) = lines_of(&data, 0, 8);
        assert_eq!(got, vec![b"ok".to_vec(), b"fine".to_vec()]);
        assert_eq!(out.oversize, 2);
        assert_eq!(out.end_offset, data.len() as u64);
        assert!(!out.pending_tail);
    }

    #[test]
    fn long_lines_within_limit_grow_the_buffer() {
        let mut data = vec![b'y'; 2 * CHUNK + 5];
        data.push(b'\n');
        let (got, out) = lines_of(&data, 0, 4 * CHUNK as u64);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 2 * CHUNK + 5);
        assert_eq!(out.oversize, 0);
    }

    #[test]
    fn anchor_changes_with_content() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"hello\nworld\n").unwrap();
        let a = anchor_hash(&f, 12).unwrap();
        let b = anchor_hash(&f, 6).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, anchor_hash(&f, 12).unwrap());
        // Persisted in checkpoints: the value for a known input must never change.
        assert_eq!(anchor_hash(&f, 5).unwrap(), 0xf7ec_eec7_df09_a378);
    }
}
