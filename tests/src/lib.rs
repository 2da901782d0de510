//! The e2e harness: find the built binaries, run them as real processes in private temp dirs,
//! talk to them over real sockets, and always clean up, even when an assertion fails.
//!
//! Every wait has a deadline; nothing sleeps to synchronise where an event (a line on stdout,
//! a pid change, an HTTP answer) can be waited for instead.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, mpsc},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Path of a workspace binary: `$E2E_BIN_DIR/<name>`, else the target dir this test runs from.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("E2E_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("current exe");
        let mut dir = exe.parent().expect("exe dir").to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        dir
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// Serialises tests that measure latency or spawn heavy processes: the machine has two cores.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `f` every few ms until it returns `Some` or `deadline` passes.
pub fn wait_until<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A child process killed and reaped when dropped, so that a test that fails early leaves no
/// process behind. Derefs to the [`std::process::Child`].
pub struct Reaped(pub std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Parent pid and state letter of `pid` from /proc (None when it no longer exists).
pub fn proc_stat(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((_, state)) if state != 'Z' && state != 'X')
}

/// Runs the `clawgate` CLI to completion and returns (exit code, stdout, stderr).
pub fn run_clawgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("clawgate")).args(args).output().expect("run clawgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTP client that returns error statuses as values and never waits forever.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into()
}

/// A running `clawgate serve`, killed (with its worker) on drop.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub data_dir: PathBuf,
    agent: ureq::Agent,
    seen_workers: Mutex<Vec<u32>>,
    /// Sent by [`Gateway::get`] and [`Gateway::call`] when set ([`Gateway::with_token`]).
    token: Option<String>,
}

impl Gateway {
    /// Starts `clawgate serve` on an ephemeral port over `state_dir`, with its data under
    /// `work_dir`, and waits (30 s at most) for its listening line.
    pub fn start(work_dir: &Path, state_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Gateway {
        Gateway::start_at("127.0.0.1:0", work_dir, state_dir, extra_args, env)
    }

    /// Makes [`Gateway::get`], [`Gateway::call`] and the helpers built on them send `token`.
    pub fn with_token(mut self, token: &str) -> Gateway {
        self.token = Some(token.to_owned());
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `127.0.0.1:PORT`, for raw TCP clients.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// GET `path` → (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut req = self.agent.get(self.url(path));
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let mut res = req.call().expect("GET");
        let status = res.status().as_u16();
        let body = res.body_mut().with_config().limit(1 << 30).read_to_string().expect("body");
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    /// `POST /api/v1/call/<method>` → (status, JSON body).
    pub fn call(&self, method: &str, params: &Value) -> (u16, Value) {
        let mut req = self
            .agent
            .post(self.url(&format!("/api/v1/call/{method}")))
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let mut res = req.send(params.to_string()).expect("POST");
        let status = res.status().as_u16();
        let body = res.body_mut().with_config().limit(1 << 30).read_to_string().expect("body");
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    /// The payload of a successful call; panics with the error otherwise.
    pub fn call_ok(&self, method: &str, params: &Value) -> Value {
        let (status, body) = self.call(method, params);
        assert_eq!(status, 200, "{method} failed: {body}");
        assert_eq!(body["ok"], Value::Bool(true), "{body}");
        body["payload"].clone()
    }

    pub fn status(&self) -> Value {
        let (code, body) = self.get("/api/v1/status");
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Waits up to `deadline` for the gateway process to exit, reaping it.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        wait_until(deadline, || self.child.try_wait().ok().flatten())
    }

    /// The pid of the current worker once it is ready (30 s at most).
    pub fn ready_worker_pid(&self) -> u32 {
        let pid = wait_until(Duration::from_secs(30), || {
            let status = self.status();
            let ready = matches!(status["worker"]["state"].as_str(), Some("ready" | "busy"));
            status["worker"]["pid"].as_u64().filter(|_| ready).map(|p| p as u32)
        })
        .unwrap_or_else(|| panic!("worker never became ready: {}", self.status()));
        self.seen_workers.lock().expect("workers").push(pid);
        pid
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The worker exits when its connection closes; make sure of it anyway.
        for pid in self.seen_workers.lock().map(|w| w.clone()).unwrap_or_default() {
            if alive(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// What a [`HealthProbe`] saw.
#[derive(Debug)]
pub struct ProbeReport {
    pub count: u64,
    /// Failed probes and probes slower than the limit, described.
    pub failures: Vec<String>,
    pub max: Duration,
}

/// Probes `GET /healthz` every 10 ms on a thread of its own until stopped. Failures are errors,
/// any probe over four times `limit`, and more than 2% of probes (at least two) over `limit`.
pub struct HealthProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<ProbeReport>,
}

impl HealthProbe {
    pub fn start(base: &str, limit: Duration) -> HealthProbe {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let url = format!("{base}/healthz");
        let thread = std::thread::spawn(move || {
            // Timeouts per phase: with a global one ureq resolves the address on a new thread
            // for every call, and each probe would time a thread start too.
            let two = Some(Duration::from_secs(2));
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(two)
                .timeout_recv_response(two)
                .timeout_recv_body(two)
                .build()
                .into();
            let mut report = ProbeReport { count: 0, failures: Vec::new(), max: Duration::ZERO };
            let mut slow = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let res = agent.get(&url).call();
                let took = started.elapsed();
                report.count += 1;
                report.max = report.max.max(took);
                match res {
                    Ok(r) if r.status().as_u16() == 200 => {}
                    Ok(r) => report.failures.push(format!("status {}", r.status())),
                    Err(e) => report.failures.push(e.to_string()),
                }
                if took > limit * 4 {
                    report.failures.push(format!("probe took {took:?}"));
                } else if took > limit {
                    slow.push(took);
                }
                std::thread::sleep(Duration::from_millis(10).saturating_sub(took));
            }
            // A blocked gateway shows as a run of slow probes or one long one; a lone probe
            // over the limit is the shared 2-core test machine descheduling this thread.
            if slow.len() as u64 > (report.count / 50).max(1) {
                report.failures.push(format!(
                    "{} of {} probes over {limit:?}: {slow:?}",
                    slow.len(),
                    report.count
                ));
            }
            report
        });
        HealthProbe { stop, thread }
    }

    /// Stops probing and returns what was seen.
    pub fn finish(self) -> ProbeReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("probe thread")
    }
}

/// Compares two money sums within `1e-9` relative.
pub fn assert_money_eq(actual: f64, expected: f64, what: &str) {
    let scale = expected.abs().max(1e-12);
    assert!(((actual - expected) / scale).abs() <= 1e-9, "{what}: {actual} != {expected}");
}

impl Gateway {
    /// Like [`Gateway::start`], but listening on `listen` (e.g. the address of a gateway that was
    /// just stopped, to restart it where its clients expect it).
    pub fn start_at(
        listen: &str,
        work_dir: &Path,
        state_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        Gateway::start_wrapped(&[], listen, work_dir, state_dir, extra_args, env)
    }

    /// Like [`Gateway::start_at`], run through `wrapper` (a command that execs its arguments,
    /// e.g. `["prlimit", "--nofile=1024:1024", "--"]`, so the child's pid stays the gateway's).
    pub fn start_wrapped(
        wrapper: &[&str],
        listen: &str,
        work_dir: &Path,
        state_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        let data_dir = work_dir.join("data");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(work_dir.join("gateway.log"))
            .expect("gateway log");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(bin("clawgate"));
                command
            }
            None => Command::new(bin("clawgate")),
        };
        command
            .args(["serve", "--listen", listen, "--state-dir"])
            .arg(state_dir)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra_args)
            .env("CLAWGATE_WORKER_BIN", bin("clawgate-usage-worker"))
            .env_remove("CLAWGATE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn clawgate serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let base = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("clawgate listening on ") {
                        break url.trim().to_owned();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(work_dir.join("gateway.log")).unwrap_or_default();
                    panic!(
                        "clawgate serve --listen {listen} did not report listening within 30 s; log:\n{log}"
                    );
                }
            }
        };
        Gateway {
            child,
            base,
            data_dir,
            agent: http_agent(Duration::from_secs(60)),
            seen_workers: Mutex::new(Vec::new()),
            token: None,
        }
    }
}
