//! Reading a child's memory from /proc, without trusting the child to report it.

/// Resident set size of `pid` in bytes, from `/proc/<pid>/status` (`VmRSS`). `None` when the
/// process is gone or /proc is unavailable.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
