//! Where a report's answers come from: a running gateway over HTTP, or a state dir read by a
//! worker this command starts through the supervisor (the one code path that starts workers).
//!
//! Both take the same OpenClaw params and give back the same payload, so a report is the same
//! document whichever way it was made. Neither retries forever: one deadline bounds the command.

use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{ReportError, progress::Progress};
use crate::cli_status;

/// A source of usage answers.
pub enum Source {
    Gateway(GatewaySource),
    StateDir(Box<StateDirSource>),
}

impl Source {
    /// The payload of `method` with `params`, within `deadline`.
    pub fn fetch(&mut self, method: &str, params: &Value, deadline: Instant) -> Result<Value, ReportError> {
        match self {
            Source::Gateway(g) => g.fetch(method, params, deadline),
            Source::StateDir(s) => s.fetch(method, params, deadline),
        }
    }

    /// How the JSON document names the source.
    pub fn describe(&self) -> Value {
        match self {
            Source::Gateway(g) => serde_json::json!({"gateway": g.opts.url}),
            Source::StateDir(s) => serde_json::json!({"stateDir": s.state_dir}),
        }
    }

    /// The state dir a warning about missing agents names: ours, or the gateway's own (from its
    /// status document, when it answers).
    pub fn state_dir(&self) -> Option<PathBuf> {
        match self {
            Source::StateDir(s) => Some(s.state_dir.clone()),
            Source::Gateway(g) => {
                let mut res =
                    cli_status::agent(Duration::from_secs(2)).get(format!("{}/api/v1/status", g.opts.url));
                if let Some(token) = &g.opts.token {
                    res = res.header("authorization", format!("Bearer {token}"));
                }
                let mut res = res.call().ok()?;
                let body: Value = serde_json::from_str(&res.body_mut().read_to_string().ok()?).ok()?;
                body["gateway"]["stateDir"].as_str().map(PathBuf::from)
            }
        }
    }
}

/// A running gateway, asked through `POST /api/v1/call/{method}`.
pub struct GatewaySource {
    pub opts: cli_status::Options,
    /// Draws "waiting" on stderr while the gateway answers UNAVAILABLE (a cold store).
    pub progress: Progress,
}

impl GatewaySource {
    fn fetch(&mut self, method: &str, params: &Value, deadline: Instant) -> Result<Value, ReportError> {
        let url = format!("{}/api/v1/call/{method}", self.opts.url);
        let started = Instant::now();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReportError::Unavailable(format!("{method}: no answer within the --timeout")));
            }
            let mut req = cli_status::agent(left).post(&url).header("content-type", "application/json");
            if let Some(token) = &self.opts.token {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            let mut res = req.send(params.to_string()).map_err(|e| match e {
                ureq::Error::Timeout(_) => {
                    ReportError::Unavailable(format!("{method}: no answer within the --timeout"))
                }
                other => {
                    ReportError::Unreachable { url: self.opts.url.clone(), why: cli_status::describe(&other) }
                }
            })?;
            let status = res.status().as_u16();
            if status == 401 {
                return Err(ReportError::Unauthorized(self.opts.token_source.clone()));
            }
            let text = res
                .body_mut()
                .with_config()
                .limit(1 << 30)
                .read_to_string()
                .map_err(|e| ReportError::Unavailable(format!("{method}: reading the answer: {e}")))?;
            let body: Value = serde_json::from_str(&text).map_err(|_| {
                ReportError::Failed(format!("{method}: HTTP {status} with an answer that is not JSON"))
            })?;
            if body["ok"] == true {
                self.progress.clear();
                return Ok(body["payload"].clone());
            }
            let error = &body["error"];
            let message = format!(
                "{method}: {} ({})",
                error["message"].as_str().unwrap_or("no message"),
                error["code"].as_str().unwrap_or("?")
            );
            match (error["code"].as_str(), error["retryAfterMs"].as_u64()) {
                (Some("INVALID_REQUEST"), _) => return Err(ReportError::Usage(message)),
                (_, Some(after)) if error["retryable"] == true => {
                    // A cold store: the job goes on in the gateway; ask again when told to.
                    let wait = Duration::from_millis(after.clamp(100, 5_000));
                    if Instant::now() + wait >= deadline {
                        return Err(ReportError::Unavailable(message));
                    }
                    self.progress.waiting(&format!(
                        "waiting for the gateway's worker ({}s): {}",
                        started.elapsed().as_secs(),
                        error["message"].as_str().unwrap_or("")
                    ));
                    std::thread::sleep(wait);
                }
                _ => return Err(ReportError::Unavailable(message)),
            }
        }
    }
}

/// A state dir read by a worker of our own, started and watched by the supervisor exactly as
/// `serve` does (managed mode), with its rollups kept under the data dir so the next report
/// over the same store reads only what changed.
pub struct StateDirSource {
    pub state_dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    supervisor: supervisor::SupervisorHandle,
    progress: Progress,
    /// The worker socket's private directory, removed when the report is done.
    _run_dir: tempfile::TempDir,
}

/// The rollup cache of reports over `state_dir`: one per store, so reports over two stores do
/// not discard each other's (the worker starts over when its index belongs to another store).
pub fn report_cache_dir(data_dir: &Path, state_dir: &Path) -> PathBuf {
    use std::hash::Hasher as _;
    // FNV-1a: stable across builds, unlike `DefaultHasher`.
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(state_dir.as_os_str().as_encoded_bytes());
    let hash = hasher.finish();
    data_dir.join("report").join(format!("{hash:016x}"))
}

impl StateDirSource {
    /// Starts the worker over `state_dir`. `data_dir`: where the rollup cache goes (`None`:
    /// memory only). The call does not wait for the worker: the first fetch does.
    pub fn start(
        state_dir: PathBuf,
        data_dir: Option<PathBuf>,
        worker_bin: PathBuf,
        progress: Progress,
    ) -> Result<StateDirSource, ReportError> {
        if !state_dir.is_dir() {
            return Err(ReportError::Usage(format!(
                "state directory {} does not exist or is not a directory",
                state_dir.display()
            )));
        }
        if !worker_bin.is_file() {
            return Err(ReportError::Failed(format!(
                "the usage worker {} is missing (install it beside clawgate, or pass --worker-bin)",
                worker_bin.display()
            )));
        }
        let run_dir = tempfile::Builder::new().prefix("clawgate-report-").tempdir().map_err(|e| {
            ReportError::Failed(format!("creating a private directory for the worker socket: {e}"))
        })?;
        // One command: the worker does on the call what a running one leaves to its idle moments.
        let mut args = vec!["--one-shot".into(), "--state-dir".into(), state_dir.clone().into_os_string()];
        if let Some(dir) = data_dir {
            args.extend(["--data-dir".into(), dir.into_os_string()]);
        }
        let mut config = supervisor::Config::new(worker_bin, args, run_dir.path().join("run"));
        // A report is one command: no cgroup of its own, and a job may take as long as the
        // command's deadline allows (the caller bounds it).
        config.use_cgroup = false;
        config.job_timeout = Duration::from_secs(24 * 3600);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("clawgate-report")
            .enable_all()
            .build()
            .map_err(|e| ReportError::Failed(format!("building the runtime: {e}")))?;
        let supervisor = {
            let _entered = runtime.enter();
            supervisor::start(config)
        };
        Ok(StateDirSource { state_dir, runtime, supervisor, progress, _run_dir: run_dir })
    }

    fn fetch(&mut self, method: &str, params: &Value, deadline: Instant) -> Result<Value, ReportError> {
        let wire = ipc_proto::Method::from_name(method)
            .ok_or_else(|| ReportError::Failed(format!("no such method {method}")))?;
        let query = crate::params::parse(wire, params, jiff::Timestamp::now())
            .map_err(|e| ReportError::Usage(format!("{method}: {e}")))?;
        let supervisor = self.supervisor.clone();
        let progress = &mut self.progress;
        let reply = self.runtime.block_on(async {
            let mut updates = supervisor.progress();
            let call = supervisor.call(query, None);
            tokio::pin!(call);
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = tokio::time::sleep(left);
            tokio::pin!(timeout);
            loop {
                // Progress first: a job's last frame arrives before its answer, and is drawn.
                tokio::select! {
                    biased;
                    Ok(()) = updates.changed() => {
                        if let Some(p) = *updates.borrow_and_update() {
                            progress.files(p.files_done, p.files_total, p.bytes_done);
                        }
                    }
                    reply = &mut call => return Some(reply),
                    _ = &mut timeout => return None,
                }
            }
        });
        self.progress.clear();
        let reply = match reply {
            None => {
                return Err(ReportError::Unavailable(format!("{method}: no answer within the --timeout")));
            }
            Some(Ok(reply)) => reply,
            Some(Err(error)) => {
                let status = self.supervisor.status();
                let why = status
                    .last_exit
                    .as_ref()
                    .and_then(|exit| {
                        exit.reason.clone().map(|r| format!(" (worker exit: {}: {r})", exit.cause.as_str()))
                    })
                    .unwrap_or_default();
                return Err(match &error {
                    supervisor::CallError::Worker(e)
                        if e.kind == ipc_proto::WorkerErrorKind::InvalidRequest =>
                    {
                        ReportError::Usage(format!("{method}: {}", e.message))
                    }
                    _ => ReportError::Unavailable(format!("{method}: {error}{why}")),
                });
            }
        };
        match reply {
            ipc_proto::UsageReply::Answer(answer) => serde_json::from_str(&answer.payload_text())
                .map_err(|e| ReportError::Failed(format!("{method}: the worker's answer is not JSON: {e}"))),
            ipc_proto::UsageReply::Unchanged { .. } => {
                Err(ReportError::Failed(format!("{method}: the worker answered 'unchanged' to a new query")))
            }
        }
    }

    /// Starts stopping the worker (a clean `Shutdown`, then a kill after the grace period)
    /// without waiting: [`Stopping::wait`] reaps it. The caller prints meanwhile.
    pub fn stop(self) -> Stopping {
        let supervisor = self.supervisor.clone();
        let task = self.runtime.spawn(async move { supervisor.shutdown().await });
        Stopping { runtime: self.runtime, task, _run_dir: self._run_dir }
    }
}

/// A worker being stopped ([`StateDirSource::stop`]).
pub struct Stopping {
    runtime: tokio::runtime::Runtime,
    task: tokio::task::JoinHandle<()>,
    /// The socket's directory outlives the worker.
    _run_dir: tempfile::TempDir,
}

impl Stopping {
    /// Waits until the worker has exited and is reaped.
    pub fn wait(self) {
        let _ = self.runtime.block_on(self.task);
    }
}

/// Whether stderr is a terminal: the progress bar and the waiting line go there only then.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_store_has_its_own_stable_cache_dir() {
        let data = Path::new("/data");
        let a = report_cache_dir(data, Path::new("/home/a/.openclaw"));
        assert_eq!(a, report_cache_dir(data, Path::new("/home/a/.openclaw")));
        assert_ne!(a, report_cache_dir(data, Path::new("/home/b/.openclaw")));
        // Pinned: a new hash would orphan every existing cache.
        assert_eq!(report_cache_dir(data, Path::new("")), Path::new("/data/report/cbf29ce484222325"));
    }
}
