//! The supervision loop in-process, on paused tokio time: an external-mode supervisor talks to a
//! fake worker on a real socket in a temp dir, and the restart backoff, the `failed` cool-down
//! and heartbeat misses are measured on tokio's clock, which jumps ahead whenever both sides are
//! idle. Minutes of supervision take milliseconds of real time, with exact timings.

use std::{path::Path, sync::Arc, time::Duration};

use interprocess::local_socket::traits::tokio::Listener as _;
use ipc_proto::{Connection, FromWorker, MAX_REQUEST_FRAME, MemoryReport, ToWorker};
use tokio::{
    sync::Mutex,
    time::{Instant, timeout},
};

use super::*;

/// What the fake worker does once it has completed a handshake.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Closes the connection at once: a worker that keeps dying.
    Close,
    /// Keeps the connection open and never reads from it: a hung worker.
    Silent,
    /// Answers every ping: a healthy worker.
    Healthy,
}

/// The virtual times at which the fake worker accepted a gateway.
type Accepts = Arc<Mutex<Vec<Instant>>>;

/// Listens on `socket` and serves gateways one at a time, as `clawgate-usage-worker --listen`.
fn fake_worker(socket: &Path, behaviour: Behaviour) -> Accepts {
    let listener = ipc_proto::endpoint::bind(socket).expect("bind the fake worker");
    let accepts: Accepts = Arc::default();
    let seen = Arc::clone(&accepts);
    tokio::spawn(async move {
        loop {
            let Ok(stream) = listener.accept().await else { return };
            seen.lock().await.push(Instant::now());
            let mut conn = Connection::new(stream, MAX_REQUEST_FRAME);
            if conn.handshake_as_worker("fake").await.is_err() {
                continue;
            }
            match behaviour {
                Behaviour::Close => drop(conn),
                // Held until the supervisor drops it; then the next gateway is accepted.
                Behaviour::Silent => {
                    tokio::spawn(async move {
                        let _held = conn;
                        std::future::pending::<()>().await;
                    });
                }
                Behaviour::Healthy => {
                    while let Ok(Some(msg)) = conn.read::<ToWorker>().await {
                        if let ToWorker::Ping { seq } = msg {
                            let pong = FromWorker::Pong { seq, memory: MemoryReport::default() };
                            if conn.write(&pong).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        }
    });
    accepts
}

fn external_config(dir: &Path, restart: RestartPolicy) -> Config {
    let socket = dir.join("worker.sock");
    let mut config = Config::new("unused".into(), Vec::new(), dir.to_path_buf());
    config.mode = Mode::External { socket };
    config.restart = restart;
    config
}

/// Waits (on virtual time) until the status satisfies `done`, for at most `limit`.
async fn wait_status(
    handle: &SupervisorHandle,
    limit: Duration,
    done: impl Fn(&WorkerStatus) -> bool,
) -> WorkerStatus {
    let mut changes = handle.watch();
    timeout(limit, async {
        loop {
            let status = changes.borrow_and_update().clone();
            if done(&status) {
                return status;
            }
            changes.changed().await.expect("the supervisor is running");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("status never reached the condition within {limit:?}: {:?}", handle.status()))
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_then_park_in_failed_for_the_cool_down() {
    let real_start = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = RestartPolicy {
        backoff_min: Duration::from_millis(100),
        max_restarts: 3,
        window: Duration::from_secs(60),
        cooldown: Duration::from_secs(20),
        ..RestartPolicy::default()
    };
    let config = external_config(dir.path(), policy);
    let accepts = fake_worker(&dir.path().join("worker.sock"), Behaviour::Close);
    let handle = start(config);

    // Three restarts back off, doubling; the fourth end trips the intensity limit.
    let failed = wait_status(&handle, Duration::from_secs(30), |s| s.phase == Phase::Failed).await;
    assert_eq!(failed.restarts, 4, "{failed:?}");
    assert_eq!(failed.restarts_by_cause.get("connection_lost"), Some(&4), "{failed:?}");
    assert_eq!(failed.retry_after, Some(Duration::from_secs(20)), "parked for the cool-down");
    let parked_at = Instant::now();
    let times = accepts.lock().await.clone();
    assert_eq!(times.len(), 4, "{times:?}");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let base = Duration::from_millis(100) * (1 << i);
        // ±20% jitter around the doubling delay.
        assert!(
            *gap >= base.mul_f64(0.8) && *gap <= base.mul_f64(1.2),
            "restart {i} after {gap:?}: {gaps:?}"
        );
    }

    // While parked, calls fail at once with the time left.
    match handle.ping().await {
        Err(CallError::Unavailable { phase: Phase::Failed, retry_after }) => {
            assert!(
                retry_after <= Duration::from_secs(20) && retry_after > Duration::from_secs(19),
                "{retry_after:?}"
            )
        }
        other => panic!("expected Unavailable while failed, got {other:?}"),
    }

    // After the cool-down the supervisor tries again, and not before.
    wait_status(&handle, Duration::from_secs(60), |s| s.restarts > 4).await;
    let times = accepts.lock().await.clone();
    let retried = times[4] - parked_at;
    assert_eq!(retried, Duration::from_secs(20), "the next try comes after exactly the cool-down");

    handle.shutdown().await;
    assert!(
        real_start.elapsed() < Duration::from_secs(10),
        "a minute of supervision must not take real time: {:?}",
        real_start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_misses_three_heartbeats_is_dropped_as_hung() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = external_config(dir.path(), RestartPolicy::default());
    let heartbeat = config.heartbeat_interval;
    let accepts = fake_worker(&dir.path().join("worker.sock"), Behaviour::Silent);
    let handle = start(config);

    let ready = wait_status(&handle, Duration::from_secs(5), |s| s.phase == Phase::Ready).await;
    let ready_at = Instant::now();
    assert_eq!(ready.restarts, 0);
    let ended = wait_status(&handle, Duration::from_secs(30), |s| s.restarts == 1).await;
    let took = Instant::now() - ready_at;
    let exit = ended.last_exit.expect("an exit report");
    assert_eq!(exit.cause, ExitCause::Hang, "{exit:?}");
    assert_eq!(ended.phase, Phase::Backoff);
    // Pings go out at 0, 1 s and 2 s; at 3 s three are unanswered.
    assert_eq!(took, heartbeat * 3, "hang detected after {took:?}");
    // It reconnects after its backoff (a held connection does not block the next accept).
    wait_status(&handle, Duration::from_secs(5), |s| s.phase == Phase::Ready).await;
    assert_eq!(accepts.lock().await.len(), 2);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_answers_its_pings_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = external_config(dir.path(), RestartPolicy::default());
    fake_worker(&dir.path().join("worker.sock"), Behaviour::Healthy);
    let handle = start(config);
    wait_status(&handle, Duration::from_secs(5), |s| s.phase == Phase::Ready).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let status = handle.status();
    assert_eq!((status.phase, status.restarts), (Phase::Ready, 0), "{status:?}");
    assert!(status.last_ping_rtt.is_some(), "pongs are seen: {status:?}");
    let (rtt, _) = handle.ping().await.expect("an on-demand ping is answered");
    assert!(rtt < Duration::from_secs(1));
    handle.shutdown().await;
    assert_eq!(handle.status().phase, Phase::Stopped);
}
