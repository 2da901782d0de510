//! systemd integration for `Type=notify` units: `READY=1` once the gateway listens, `WATCHDOG=1`
//! pings from a task on the gateway's own runtime, and `STOPPING=1` on shutdown.
//!
//! The protocol is one datagram per message to `$NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace); a dozen lines over std's `UnixDatagram`, so no crate and no unsafe. Every
//! call is a no-op outside systemd (no `$NOTIFY_SOCKET`). The watchdog runs on the runtime that
//! serves HTTP on purpose: if that runtime stalls, the pings stop and systemd restarts the gateway.

use std::{
    ffi::OsStr,
    io,
    os::unix::{ffi::OsStrExt as _, net::UnixDatagram},
    time::Duration,
};

/// Sends `state` (e.g. `"READY=1"`) to `$NOTIFY_SOCKET`. `Ok(false)` when not run by systemd.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) {
        Some(socket) => send_to(&socket, state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends one notification datagram to the socket named `socket`.
fn send_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    // Never block the runtime on a full notification queue: a lost ping is better than a stall.
    sock.set_nonblocking(true)?;
    let name = socket.as_bytes();
    if let Some(abstract_name) = name.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), socket)?;
    }
    Ok(())
}

fn log_failure(what: &str, result: io::Result<bool>) {
    if let Err(error) = result {
        tracing::warn!(%error, "Could not notify systemd ({what}).");
    }
}

/// Tells systemd the gateway is up (`READY=1`), with a one-line status for `systemctl status`.
pub fn notify_ready() {
    log_failure("ready", notify("READY=1\nSTATUS=Serving HTTP"));
}

/// Tells systemd the gateway is shutting down on purpose (`STOPPING=1`).
pub fn notify_stopping() {
    log_failure("stopping", notify("STOPPING=1\nSTATUS=Stopping"));
}

/// The watchdog interval systemd asks of this process: `$WATCHDOG_USEC`, when `$WATCHDOG_PID` is
/// unset or names this process (a child that inherited the variables must not ping).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Starts pinging systemd's watchdog at half the requested interval from a task on the current
/// tokio runtime. Returns `None` (and starts nothing) when no watchdog is requested.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval()? / 2;
    tracing::info!(interval_ms = interval.as_millis() as u64, "Pinging the systemd watchdog.");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        // After a stall, ping once and carry on; a burst of late pings would hide nothing.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            log_failure("watchdog", notify("WATCHDOG=1"));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_respects_pid_and_bad_values() {
        assert_eq!(parse_watchdog(Some("2000000"), None, 7), Some(Duration::from_secs(2)));
        assert_eq!(parse_watchdog(Some("2000000"), Some("7"), 7), Some(Duration::from_secs(2)));
        assert_eq!(parse_watchdog(Some("2000000"), Some("8"), 7), None, "another process's watchdog");
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
        assert_eq!(parse_watchdog(None, Some("7"), 7), None);
    }

    #[test]
    fn sends_datagrams_to_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("clawgate-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).expect("bind");
        send_to(path.as_os_str(), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).expect("cleanup");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("clawgate-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let receiver = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send_to(OsStr::new(&format!("@{name}")), "WATCHDOG=1").expect("send abstract");
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
