//! The progress line on stderr: a bar while the worker reads a cold store (from its `Progress`
//! frames), or a "waiting" line while a gateway answers that its worker is still busy.
//!
//! Drawn only when stderr is a terminal (never into a log or a pipe), at most ten times a
//! second, always on one line that is cleared before anything else is printed. Twenty lines of
//! our own rather than a progress-bar crate: there is one bar and nothing else to manage.

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

/// Redraws at most this often.
const EVERY: Duration = Duration::from_millis(100);
const BAR: usize = 24;

/// One line on stderr, or nothing when disabled.
pub struct Progress {
    enabled: bool,
    drawn: bool,
    last: Option<Instant>,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress { enabled, drawn: false, last: None }
    }

    /// Files read of those listed so far, and bytes parsed.
    pub fn files(&mut self, done: u64, total: u64, bytes: u64) {
        if total == 0 {
            return;
        }
        let filled = (done.min(total) as usize * BAR) / total as usize;
        let line = format!(
            "reading transcripts [{}{}] {}/{} files, {}",
            "#".repeat(filled),
            ".".repeat(BAR - filled),
            super::render::thousands(done),
            super::render::thousands(total),
            human_bytes(bytes)
        );
        self.draw(&line, done >= total);
    }

    /// A line of text (the gateway is still computing).
    pub fn waiting(&mut self, text: &str) {
        let text: String = text.chars().take(100).collect();
        self.draw(&text, true);
    }

    fn draw(&mut self, line: &str, force: bool) {
        if !self.enabled || (!force && self.last.is_some_and(|t| t.elapsed() < EVERY)) {
            return;
        }
        self.last = Some(Instant::now());
        self.drawn = true;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    /// Erases the line, if one was drawn.
    pub fn clear(&mut self) {
        if std::mem::take(&mut self.drawn) {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1_450_000_000), "1.4 GiB");
    }
}
