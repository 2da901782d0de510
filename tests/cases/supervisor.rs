//! The supervisor against real processes: memory caps in their layers, hangs, crash loops,
//! poison queries, gateway death and external mode. Faults are injected through the worker's
//! real compute path with `key: "__fault__:<fault>"`, which only debug builds honour.

use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e::{Gateway, HealthProbe, alive, bin, exclusive, proc_stat, wait_until};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};

use crate::skeleton::{all_usage, assert_totals_eq, demo};

fn fault(name: &str) -> Value {
    json!({"key": format!("__fault__:{name}"), "range": "all"})
}

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).expect("signal");
}

/// Waits for a ready worker other than `old`.
fn next_worker(gateway: &Gateway, old: u32) -> u32 {
    wait_until(Duration::from_secs(20), || {
        let status = gateway.status();
        let pid = status["worker"]["pid"].as_u64()? as u32;
        (pid != old && status["worker"]["state"] == "ready").then_some(pid)
    })
    .unwrap_or_else(|| panic!("no new worker became ready: {}", gateway.status()))
}

/// The worker's index in the gateway's data dir (rollups are committed there before an answer
/// is sent, so there is nothing to wait for).
fn assert_index_written(gateway: &Gateway) {
    let index = gateway.data_dir.join("cache").join("usage-index.sqlite");
    assert!(index.is_file(), "{} was not written", index.display());
}

fn assert_retryable_unavailable(code: u16, body: &Value) {
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
    assert_eq!(body["error"]["retryable"], true, "{body}");
    assert!(body["error"]["retryAfterMs"].as_u64().is_some(), "{body}");
}

#[test]
fn a_job_over_the_heap_budget_is_refused_and_the_worker_stays_up() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 1, 3, 4);
    // The documented floor. Below it the budget (80% of the cap) may leave less room than the
    // worker's RSS outside the counted heap (code, SQLite's own allocations: 18 MB or more in a
    // debug build), and the RSS watch killed the worker before the budget refused the job in
    // about one run in five at 64 MiB.
    let gateway = Gateway::start(dir.path(), &store, &["--worker-memory-max", "256MiB"], &[]);
    let worker = gateway.ready_worker_pid();
    let cold = gateway.call_ok("sessions.usage", &all_usage());
    assert!(cold["diagnostics"]["bytesParsed"].as_u64() > Some(0), "{}", cold["diagnostics"]);
    assert_index_written(&gateway);
    let probe = HealthProbe::start(&gateway.base, Duration::from_millis(50));

    let started = Instant::now();
    let (code, body) = gateway.call("sessions.usage", &fault("alloc:400"));
    let took = started.elapsed();
    assert_retryable_unavailable(code, &body);
    assert!(body["error"]["message"].as_str().unwrap().contains("memory budget"), "{body}");
    // 205 MiB of budget at ~2 ms per MiB: crossed after ~0.4 s on an idle machine, 2-4 s with
    // both cores busy elsewhere (each MiB is touched, then a sleep); a refusal, never a hang.
    assert!(took < Duration::from_secs(10), "refusal took {took:?}");

    let usage = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&usage["totals"], &manifest["totals"]);
    // The engine shed what it held with the job; the next one reads the rollups from its index.
    assert_eq!(usage["diagnostics"]["bytesParsed"], 0, "parsed the store again: {}", usage["diagnostics"]);
    let report = probe.finish();
    assert!(report.failures.is_empty(), "health failed: {:?}", report.failures);
    let status = gateway.status();
    assert_eq!(status["worker"]["pid"].as_u64(), Some(u64::from(worker)), "the worker stays up: {status}");
    assert_eq!(status["worker"]["restarts"], 0);
    let memory = &status["worker"]["memory"];
    assert_eq!(memory["capBytes"], 256 << 20);
    assert_eq!(memory["budgetRefusals"], 1, "{memory}");
    assert_eq!(memory["lastAction"]["layer"], "budget", "{memory}");
    eprintln!("budget refusal after {took:?}; health max {:?} over {} probes", report.max, report.count);
}

#[test]
fn rss_over_the_cap_gets_the_worker_killed_and_replaced() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 1, 3, 4);
    let gateway = Gateway::start(
        dir.path(),
        &store,
        &["--worker-memory-max", "64MiB", "--allow-small-worker-memory"],
        &[],
    );
    let gateway_pid = gateway.pid();
    let worker = gateway.ready_worker_pid();
    let probe = HealthProbe::start(&gateway.base, Duration::from_millis(50));

    let started = Instant::now();
    let (code, body) = gateway.call("sessions.usage", &fault("rss:300"));
    let took = started.elapsed();
    assert_retryable_unavailable(code, &body);
    // Crossing 64 MiB takes ~0.1 s; the RSS watch runs every 250 ms.
    assert!(took < Duration::from_millis(1500), "kill took {took:?}");
    let replacement = next_worker(&gateway, worker);
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&usage["totals"], &manifest["totals"]);
    let report = probe.finish();
    assert!(report.failures.is_empty(), "health failed: {:?}", report.failures);

    assert!(!alive(worker));
    assert_eq!(proc_stat(replacement).expect("replacement").0, gateway_pid);
    let status = gateway.status();
    assert_eq!(status["gateway"]["pid"].as_u64(), Some(u64::from(gateway_pid)));
    assert_eq!(status["worker"]["lastExit"]["cause"], "rss_cap", "{status}");
    assert_eq!(status["worker"]["restartsByCause"]["rss_cap"], 1, "{status}");
    assert_eq!(status["worker"]["memory"]["rssKills"], 1);
    assert_eq!(status["worker"]["memory"]["lastAction"]["layer"], "rss");
    eprintln!("rss kill answered after {took:?}; health max {:?}", report.max);
}

#[test]
fn a_cap_far_below_what_a_query_needs_never_reaches_health() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 2, 8, 20);
    let gateway = Gateway::start(
        dir.path(),
        &store,
        &[
            "--worker-memory-max",
            "3MiB",
            "--allow-small-worker-memory",
            "--worker-cooldown",
            "1s",
            "--request-timeout",
            "5s",
        ],
        &[],
    );
    let gateway_pid = gateway.pid();
    let probe = HealthProbe::start(&gateway.base, Duration::from_millis(50));
    // Each call is refused or loses its worker (retryable); once the same query has taken
    // down two workers it is refused outright as poison. Never a hang, never the gateway.
    for _ in 0..3 {
        let (code, body) = gateway.call("sessions.usage", &all_usage());
        assert_eq!(code, 503, "{body}");
        assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
    }
    let report = probe.finish();
    assert!(report.failures.is_empty(), "health failed: {:?}", report.failures);
    let status = gateway.status();
    assert_eq!(status["gateway"]["pid"].as_u64(), Some(u64::from(gateway_pid)));
    let memory = &status["worker"]["memory"];
    let acted = memory["budgetRefusals"].as_u64().unwrap() + memory["rssKills"].as_u64().unwrap();
    assert!(acted >= 1, "a memory layer must have acted: {status}");
}

/// An idle worker stays up. It dies with the thread that forked it (`PR_SET_PDEATHSIG`), so
/// that thread must live as long as the gateway: forked from the blocking pool, whose threads
/// retire after 10 s idle, a healthy idle worker was killed every 10 s.
#[test]
fn an_idle_worker_outlives_the_threads_that_served_its_calls() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 1, 2, 2);
    let gateway = Gateway::start(dir.path(), &store, &[], &[]);
    let worker = gateway.ready_worker_pid();
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&usage["totals"], &manifest["totals"]);
    // Tokio retires idle blocking threads after 10 s: watch 15 s for a restart.
    let restarted = wait_until(Duration::from_secs(15), || {
        let status = gateway.status();
        (status["worker"]["pid"].as_u64() != Some(u64::from(worker)) || status["worker"]["restarts"] != 0)
            .then_some(status)
    });
    assert!(restarted.is_none(), "the idle worker was replaced: {}", restarted.unwrap_or_default());
    assert!(alive(worker), "worker {worker} is gone");
}

/// A restarted worker must not parse the whole store again: rollups are committed to the index
/// as files are parsed, so a worker killed right after a big parse parses nothing.
#[test]
fn a_worker_killed_after_a_big_parse_resumes_from_its_index() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    // ~0.85 MB a session: about 80 MB, seconds of parsing to lose.
    let manifest = demo(&store, 2, 48, 100);
    let gateway = Gateway::start(dir.path(), &store, &[], &[]);
    let worker = gateway.ready_worker_pid();

    let cold = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&cold["totals"], &manifest["totals"]);
    let parsed = cold["diagnostics"]["bytesParsed"].as_u64().expect("bytesParsed");
    assert!(parsed > 64 << 20, "the store is too small for this test: {parsed} bytes parsed");
    assert_index_written(&gateway);

    signal(worker, Signal::SIGKILL);
    next_worker(&gateway, worker);
    let warm = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&warm["totals"], &manifest["totals"]);
    assert_eq!(warm["diagnostics"]["bytesParsed"], 0, "the new worker parsed again: {}", warm["diagnostics"]);
}

#[test]
fn a_stopped_worker_is_killed_after_missed_heartbeats() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    let gateway = Gateway::start(dir.path(), &store, &["--worker-heartbeat", "200ms"], &[]);
    let worker = gateway.ready_worker_pid();
    let started = Instant::now();
    signal(worker, Signal::SIGSTOP);
    let replacement = next_worker(&gateway, worker);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "hang detection took {took:?}");
    assert!(wait_until(Duration::from_secs(5), || (!alive(worker)).then_some(())).is_some());
    let status = gateway.status();
    assert_eq!(status["worker"]["lastExit"]["cause"], "hang", "{status}");
    assert_ne!(replacement, worker);
}

#[test]
fn a_job_spinning_past_its_cancel_is_killed_as_a_hang() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 1, 2, 2);
    // The request deadline answers the caller; the job itself may go on filling the cache
    // until the job deadline cancels it. A job that ignores that cancel is a hang.
    let gateway = Gateway::start(
        dir.path(),
        &store,
        &["--request-timeout", "1s", "--worker-job-timeout", "1s", "--worker-cancel-grace", "500ms"],
        &[],
    );
    let worker = gateway.ready_worker_pid();
    let started = Instant::now();
    let (code, body) = gateway.call("sessions.usage", &fault("hang"));
    assert_retryable_unavailable(code, &body);
    assert!(started.elapsed() < Duration::from_secs(3), "the deadline must answer: {:?}", started.elapsed());
    next_worker(&gateway, worker);
    let status = gateway.status();
    assert_eq!(status["worker"]["lastExit"]["cause"], "hang", "{status}");
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&usage["totals"], &manifest["totals"]);
}

#[test]
fn a_query_that_kills_two_workers_is_refused_as_poison() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    let gateway = Gateway::start(dir.path(), &store, &[], &[]);
    let mut worker = gateway.ready_worker_pid();
    for _ in 0..2 {
        let (code, body) = gateway.call("sessions.usage", &fault("panic"));
        assert_retryable_unavailable(code, &body);
        worker = next_worker(&gateway, worker);
    }
    let (code, body) = gateway.call("sessions.usage", &fault("panic"));
    assert_eq!(code, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("refusing"), "{body}");
    assert!(body["error"].get("retryable").is_none(), "{body}");
    let status = gateway.status();
    assert_eq!(status["worker"]["pid"].as_u64(), Some(u64::from(worker)), "no third death: {status}");
    assert_eq!(status["worker"]["restartsByCause"]["abort"], 2, "{status}");
}

#[test]
fn a_crash_loop_parks_the_worker_in_failed_and_it_recovers_after_the_cooldown() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 1, 2, 2);
    let flag = dir.path().join("broken");
    std::fs::write(&flag, b"").unwrap();
    let wrapper = dir.path().join("flaky-worker.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo 'broken on purpose' >&2; exit 3; fi\nexec '{}' \"$@\"\n",
            flag.display(),
            bin("clawgate-usage-worker").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper_str = wrapper.to_str().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        &store,
        &[
            "--worker-bin",
            wrapper_str,
            "--worker-max-restarts",
            "3",
            "--worker-restart-window",
            "30s",
            "--worker-cooldown",
            "3s",
        ],
        &[("CLAWGATE_WORKER_BIN", wrapper_str)],
    );
    let probe = HealthProbe::start(&gateway.base, Duration::from_millis(50));
    let failed = wait_until(Duration::from_secs(10), || {
        let status = gateway.status();
        (status["worker"]["state"] == "failed").then_some(status)
    })
    .expect("the crash loop reaches failed");
    assert!(failed["worker"]["restarts"].as_u64().unwrap() >= 4, "{failed}");
    assert_eq!(failed["worker"]["lastExit"]["cause"], "crash", "{failed}");
    assert_eq!(failed["worker"]["lastExit"]["code"], 3, "{failed}");
    assert_eq!(failed["worker"]["lastExit"]["stderrTail"][0], "broken on purpose", "{failed}");
    let started = Instant::now();
    let (code, body) = gateway.call("sessions.usage", &all_usage());
    assert_retryable_unavailable(code, &body);
    assert!(started.elapsed() < Duration::from_millis(500), "failed answers at once");
    assert_eq!(gateway.get("/readyz").0, 503);

    std::fs::remove_file(&flag).unwrap();
    let worker = gateway.ready_worker_pid();
    assert!(alive(worker));
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&usage["totals"], &manifest["totals"]);
    let report = probe.finish();
    assert!(report.failures.is_empty(), "health failed: {:?}", report.failures);
}

#[test]
fn killing_the_gateway_leaves_no_worker_behind() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    let gateway = Gateway::start(dir.path(), &store, &[], &[]);
    let worker = gateway.ready_worker_pid();
    signal(gateway.pid(), Signal::SIGKILL);
    let gone = wait_until(Duration::from_secs(5), || (!alive(worker)).then_some(()));
    assert!(gone.is_some(), "worker {worker} outlived its gateway: {:?}", proc_stat(worker));
}

/// A standalone worker in external mode, killed on drop.
struct ExternalWorker(e2e::Reaped);

impl ExternalWorker {
    fn start(socket: &std::path::Path, store: &std::path::Path) -> ExternalWorker {
        let child = Command::new(bin("clawgate-usage-worker"))
            .arg("--listen")
            .arg(socket)
            .arg("--state-dir")
            .arg(store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn worker");
        ExternalWorker(e2e::Reaped(child))
    }
}

#[test]
fn external_mode_reconnects_when_the_worker_is_restarted_by_its_own_supervisor() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 1, 3, 4);
    let socket = dir.path().join("run-ext/worker.sock");
    let mut worker = ExternalWorker::start(&socket, &store);
    let gateway = Gateway::start(
        dir.path(),
        &store,
        &["--worker-mode", "external", "--worker-socket", socket.to_str().unwrap()],
        &[],
    );
    let gateway_pid = gateway.pid();
    let first = gateway.ready_worker_pid();
    assert_eq!(first, worker.0.id());
    assert_eq!(gateway.status()["worker"]["mode"], "external");
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&usage["totals"], &manifest["totals"]);

    let probe = HealthProbe::start(&gateway.base, Duration::from_millis(50));
    let _ = worker.0.kill();
    let _ = worker.0.wait();
    assert!(
        wait_until(Duration::from_secs(5), || (gateway.status()["worker"]["state"] != "ready").then_some(()))
            .is_some()
    );
    worker = ExternalWorker::start(&socket, &store);
    let second = next_worker(&gateway, first);
    assert_eq!(second, worker.0.id());
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&usage["totals"], &manifest["totals"]);
    let report = probe.finish();
    assert!(report.failures.is_empty(), "health failed: {:?}", report.failures);
    assert_eq!(gateway.pid(), gateway_pid);
    assert!(alive(gateway_pid));
}

/// Waits up to `deadline` for `stream` to be closed by the other end; false on a timeout.
fn closed_by_peer(stream: &mut std::os::unix::net::UnixStream, deadline: Duration) -> bool {
    use std::io::Read as _;
    stream.set_read_timeout(Some(deadline)).expect("read timeout");
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// In managed mode the worker socket is accepted only from the worker the gateway spawned
/// (`SO_PEERCRED`: its pid and our uid). Another process of the same user that connects
/// first, as one winning the race after a respawn would, is refused, and the listener goes on
/// to accept the real worker within the same handshake deadline.
#[test]
fn an_impostor_on_the_managed_worker_socket_is_refused() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 1, 2, 2);
    // The spawned worker waits for the impostor to be connected first (a flag file, polled
    // for 20 s at most), then execs the real worker, which keeps its pid.
    let flag = dir.path().join("impostor-connected");
    let wrapper = dir.path().join("late-worker.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ni=0\nwhile [ ! -e '{}' ]; do i=$((i+1)); [ $i -gt 2000 ] && exit 9; sleep 0.01; done\nexec '{}' \"$@\"\n",
            flag.display(),
            bin("clawgate-usage-worker").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper_str = wrapper.to_str().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        &store,
        &["--worker-bin", wrapper_str],
        &[("CLAWGATE_WORKER_BIN", wrapper_str)],
    );
    let socket = gateway.data_dir.join("run/worker.sock");
    // Connected once the gateway listens: the file exists from `bind`, a moment before `listen`
    // (a connect in between is refused; a clean-clone run of 843d9e7 failed there).
    let mut impostor =
        wait_until(Duration::from_secs(20), || std::os::unix::net::UnixStream::connect(&socket).ok())
            .unwrap_or_else(|| panic!("could not connect to {} as an impostor", socket.display()));
    std::fs::write(&flag, b"").unwrap();

    // Refused at once, well within the 10 s handshake deadline an idle impostor used to take.
    assert!(closed_by_peer(&mut impostor, Duration::from_secs(5)), "the impostor's connection stayed open");
    let worker = gateway.ready_worker_pid();
    assert_eq!(proc_stat(worker).expect("worker").0, gateway.pid(), "the ready worker is the spawned child");
    let status = gateway.status();
    assert_eq!(status["worker"]["restarts"], 0, "{status}");
    assert_eq!(status["worker"]["rejectedPeers"], 1, "{status}");
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&usage["totals"], &manifest["totals"]);
}

/// In external mode the worker serves one gateway at a time; a client that connects to its
/// socket and never says `Hello` is dropped after the worker's handshake deadline, and the
/// gateway queued behind it gets through on its first attempt.
#[test]
fn an_idle_client_on_the_external_socket_does_not_hold_the_gateway() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 1, 2, 2);
    let socket = dir.path().join("run-ext/worker.sock");
    let worker = ExternalWorker::start(&socket, &store);
    // The socket file appears at bind(), a moment before listen(): a connect in between is
    // refused, so the wait is for a connect that succeeds.
    let mut idle =
        wait_until(Duration::from_secs(20), || std::os::unix::net::UnixStream::connect(&socket).ok())
            .unwrap_or_else(|| panic!("{} never accepted a connection", socket.display()));
    let started = Instant::now();
    let gateway = Gateway::start(
        dir.path(),
        &store,
        &["--worker-mode", "external", "--worker-socket", socket.to_str().unwrap()],
        &[],
    );
    let ready = wait_until(Duration::from_secs(15), || {
        let status = gateway.status();
        (status["worker"]["state"] == "ready").then_some(status)
    })
    .unwrap_or_else(|| panic!("the gateway stayed behind the idle client: {}", gateway.status()));
    let took = started.elapsed();
    assert_eq!(ready["worker"]["pid"].as_u64(), Some(u64::from(worker.0.id())), "{ready}");
    assert_eq!(ready["worker"]["restarts"], 0, "the first attempt got through: {ready}");
    assert!(took < Duration::from_secs(9), "ready after {took:?}, past the worker's 5 s handshake deadline");
    assert!(closed_by_peer(&mut idle, Duration::from_secs(1)), "the idle client was not dropped");
    let usage = gateway.call_ok("sessions.usage", &all_usage());
    assert_totals_eq(&usage["totals"], &manifest["totals"]);
}
