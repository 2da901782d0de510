//! `clawgate status` always answers within its deadline, with the right exit code and JSON,
//! whatever state the gateway is in.

use std::{
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use e2e::{Gateway, bin, exclusive};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use crate::skeleton::demo;

/// Runs `clawgate status --json` (plus `extra`) and returns (exit code, report, elapsed).
fn status(url: &str, extra: &[&str]) -> (i32, Value, Duration) {
    let started = Instant::now();
    let out = Command::new(bin("clawgate"))
        .args(["status", "--json", "--url", url])
        .args(extra)
        .env_remove("CLAWGATE_TOKEN")
        .output()
        .expect("run clawgate status");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    (out.status.code().unwrap_or(-1), report, took)
}

fn assert_schema(report: &Value, code: i32) {
    assert_eq!(report["schema"], "clawgate.status/v1", "{report}");
    assert_eq!(report["exitCode"], code, "{report}");
    assert_eq!(report["ok"], code == 0, "{report}");
    for key in ["url", "reasons", "gateway", "worker", "probes"] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    assert!(report["probes"]["health"]["ms"].is_number(), "{report}");
}

const DEADLINE: &[&str] = &["--timeout", "2s"];
const LIMIT: Duration = Duration::from_millis(2500);

#[test]
fn a_healthy_gateway_reports_ok_and_deep_probes_pass() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    let gateway = Gateway::start(dir.path(), &store, &[], &[]);
    gateway.ready_worker_pid();
    let (code, report, took) = status(&gateway.base, &["--deep"]);
    assert_eq!(code, 0, "{report}");
    assert_schema(&report, 0);
    assert!(took < Duration::from_secs(5));
    for probe in ["health", "status", "websocket", "workerPing", "usage", "socket"] {
        assert_eq!(report["probes"][probe]["ok"], true, "{probe}: {report}");
    }
    assert_eq!(report["worker"]["state"], "ready");
    assert!(report["systemd"].is_object(), "{report}");
    // The deep usage probe ran a job: the next report shows its duration and what it saw.
    let (_, report, _) = status(&gateway.base, &[]);
    assert!(report["jobs"]["recent"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["jobs"]["p99Ms"].is_number(), "{report}");
    assert_eq!(report["stores"]["agents"], 1, "{report}");
    assert!(report["stores"]["files"].as_u64().unwrap() >= 2, "{report}");

    // The text form says the same, without colour when not on a terminal.
    let out = Command::new(bin("clawgate")).args(["status", "--url", &gateway.base]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("clawgate status: ok"), "{text}");
    assert!(text.contains("Worker    ready (managed)"), "{text}");
    assert!(text.contains("Jobs      p50 "), "{text}");
    assert!(text.contains("Stores    1 agents"), "{text}");
    assert!(!text.contains('\x1b'), "{text}");
}

#[test]
fn nothing_listening_is_unreachable_at_once() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (code, report, took) = status(&format!("http://127.0.0.1:{port}"), DEADLINE);
    assert_eq!(code, 2);
    assert_schema(&report, 2);
    assert!(took < LIMIT, "{took:?}");
    assert!(report["probes"]["health"]["error"].as_str().unwrap().contains("refused"), "{report}");
}

#[test]
fn a_port_that_accepts_but_never_answers_times_out_within_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accept connections and hold them open without a byte of answer.
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let (code, report, took) = status(&url, &["--timeout", "2s", "--deep"]);
    assert_eq!(code, 2, "{report}");
    assert_schema(&report, 2);
    assert!(took < LIMIT, "{took:?}");
    assert!(report["probes"]["health"]["error"].as_str().unwrap().contains("timed out"), "{report}");
    drop(holder);
}

#[test]
fn a_stopped_gateway_times_out_and_a_hung_worker_is_reported() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    // A slow heartbeat so the stopped worker stays the current one while we look.
    let gateway = Gateway::start(dir.path(), &store, &["--worker-heartbeat", "10s"], &[]);
    let worker = gateway.ready_worker_pid();

    // A hung worker: the gateway answers, the deep probes that need the worker fail in time.
    kill(Pid::from_raw(worker as i32), Signal::SIGSTOP).unwrap();
    let (code, report, took) = status(&gateway.base, &["--timeout", "3s", "--deep"]);
    kill(Pid::from_raw(worker as i32), Signal::SIGCONT).unwrap();
    assert_eq!(code, 1, "{report}");
    assert_schema(&report, 1);
    assert!(took < Duration::from_millis(3500), "{took:?}");
    assert_eq!(report["probes"]["health"]["ok"], true);
    assert_eq!(report["probes"]["workerPing"]["ok"], false, "{report}");

    // A stopped gateway: every probe times out, the command does not.
    kill(Pid::from_raw(gateway.pid() as i32), Signal::SIGSTOP).unwrap();
    let (code, report, took) = status(&gateway.base, &["--timeout", "2s", "--deep"]);
    kill(Pid::from_raw(gateway.pid() as i32), Signal::SIGCONT).unwrap();
    assert_eq!(code, 2, "{report}");
    assert_schema(&report, 2);
    assert!(took < LIMIT, "{took:?}");
}

/// Runs `clawgate status` (plus `args`) with `env` and returns (exit code, stdout).
fn status_with(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(bin("clawgate"));
    command.arg("status").args(args).env_remove("CLAWGATE_TOKEN").env_remove("CLAWGATE_URL");
    command.env_remove("CLAWGATE_LISTEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run clawgate status");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A wrong or missing token is reported as unauthorized (exit 3), not as an unreachable
/// gateway; the token is found in the installed environment file without a flag.
#[test]
fn a_wrong_token_is_unauthorized_and_the_env_file_supplies_the_right_one() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    let gateway = Gateway::start(dir.path(), &store, &["--token", "right-token"], &[]);
    let ready = e2e::wait_until(Duration::from_secs(30), || {
        (status_with(&["--url", &gateway.base, "--token", "right-token"], &[]).0 == 0).then_some(())
    });
    assert!(ready.is_some(), "the worker never became ready");
    // A config home without a clawgate.env, so the check does not read the host's.
    let empty = dir.path().join("empty-config");
    std::fs::create_dir_all(&empty).unwrap();
    let home = empty.to_str().unwrap();

    let (code, out) = status_with(&["--url", &gateway.base, "--token", "wrong-token", "--json"], &[]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(code, 3, "{report}");
    assert_schema(&report, 3);
    assert_eq!(
        report["reasons"][0], "unauthorized (HTTP 401): the token from --token or CLAWGATE_TOKEN was refused",
        "{report}"
    );
    assert_eq!(report["probes"]["health"]["ok"], true, "{report}");

    let (code, text) = status_with(&["--url", &gateway.base], &[("XDG_CONFIG_HOME", home), ("HOME", home)]);
    assert_eq!(code, 3, "{text}");
    assert!(text.starts_with("clawgate status: unauthorized (HTTP 401): no token given"), "{text}");
    assert!(!text.contains("unreachable"), "{text}");

    // The user's environment file, where install.sh --user writes it.
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("clawgate")).unwrap();
    let port = gateway.addr().rsplit(':').next().unwrap().to_owned();
    std::fs::write(
        config.join("clawgate/clawgate.env"),
        format!("# written by install.sh\nCLAWGATE_LISTEN=0.0.0.0:{port}\nCLAWGATE_TOKEN=right-token\n"),
    )
    .unwrap();
    let (code, text) = status_with(&[], &[("XDG_CONFIG_HOME", config.to_str().unwrap())]);
    assert_eq!(code, 0, "the env file's token and listen address: {text}");
    assert!(text.starts_with("clawgate status: ok"), "{text}");
}

/// `--listen` takes a host name and `status --url` a HOST:PORT without a scheme.
#[test]
fn listen_takes_a_host_name_and_status_a_bare_address() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    let gateway = Gateway::start_at("localhost:0", dir.path(), &store, &[], &[]);
    assert!(gateway.base.starts_with("http://127.0.0.1:"), "localhost means 127.0.0.1: {}", gateway.base);
    gateway.ready_worker_pid();
    let (code, report, _) = status(&gateway.addr(), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["url"], gateway.base.as_str(), "{report}");
}

/// Sizes need a unit, the worker cap has a floor, durations need a unit: each refused at
/// once with a message that says what to write, before anything starts.
#[test]
fn bare_numbers_and_tiny_caps_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().unwrap();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--state-dir", data, "--data-dir", data];
        args.extend_from_slice(extra);
        let started = Instant::now();
        let (code, _, stderr) = e2e::run_clawgate(&args);
        assert!(started.elapsed() < Duration::from_secs(5), "{extra:?} was not refused at once");
        (code, stderr)
    };
    let (code, err) = serve(&["--worker-memory-max", "512"]);
    assert_ne!(code, 0);
    assert!(err.contains("\"512\" needs a unit, e.g. 512MiB"), "{err}");
    let (code, err) = serve(&["--worker-memory-max", "1KiB"]);
    assert_ne!(code, 0);
    assert!(err.contains("--worker-memory-max 1KiB is below the minimum of 256MiB"), "{err}");
    let (code, err) = serve(&["--cache-max-bytes", "16MB"]);
    assert_ne!(code, 0);
    assert!(err.contains("ambiguous"), "{err}");
    let (code, err) = serve(&["--request-timeout", "10"]);
    assert_ne!(code, 0);
    assert!(err.contains("\"10\" needs a unit, e.g. 10s"), "{err}");
    let (code, err) = serve(&["--worker-cooldown", "0s"]);
    assert_ne!(code, 0);
    assert!(err.contains("--worker-cooldown must be more than zero"), "{err}");
}

/// A state directory that does not exist: the worker exits 78 with its reason, and `status`
/// shows that reason (text and JSON) instead of only `config_error (code 78)`. The log, read
/// as the journal would keep it, has no colour codes.
#[test]
fn a_missing_state_dir_is_reported_with_the_workers_reason() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-openclaw");
    let gateway = Gateway::start(dir.path(), &missing, &[], &[]);
    let failed = e2e::wait_until(Duration::from_secs(20), || {
        let status = gateway.status();
        (status["worker"]["state"] == "failed").then_some(status)
    })
    .unwrap_or_else(|| panic!("the worker never reached failed: {}", gateway.status()));
    let exit = &failed["worker"]["lastExit"];
    assert_eq!(exit["cause"], "config_error", "{failed}");
    assert_eq!(exit["code"], 78, "{failed}");
    let expected = format!("state directory {} does not exist or is not a directory", missing.display());
    assert_eq!(exit["reason"], expected.as_str(), "{failed}");

    let (code, report, _) = status(&gateway.base, &[]);
    assert_eq!(code, 2, "{report}");
    assert_eq!(report["worker"]["lastExit"]["reason"], expected.as_str(), "{report}");
    let (code, text) = status_with(&["--url", &gateway.base], &[]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&format!("(code 78, signal n/a): {expected}")), "{text}");
    assert!(text.contains("next try in 4m"), "the 300 s config-error cool-down: {text}");

    let log = std::fs::read_to_string(dir.path().join("gateway.log")).expect("gateway log");
    assert!(log.contains("Usage worker ended."), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a log that is not a terminal:\n{log}");
}

/// Requests for methods and paths clawgate does not serve add no `/metrics` series: they are
/// counted as `other` or `/unmatched`, however many distinct ones arrive.
#[test]
fn junk_requests_add_no_metric_series() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    let gateway = Gateway::start(dir.path(), &store, &[], &[]);
    gateway.ready_worker_pid();
    let agent = e2e::http_agent(Duration::from_secs(10));
    // Unknown methods answered 400. Only answered ones count: a 404 to a POST whose body the
    // gateway does not read closes the connection, and ureq may send the next request on it
    // from its pool ("Peer disconnected"); such a request never reached the gateway.
    let answered = std::cell::Cell::new(0u64);
    let junk = |from: usize, to: usize| {
        for i in from..to {
            let _ = agent.post(gateway.url(&format!("/api/v1/call//junk-{i}"))).send("{}");
            let res = agent.post(gateway.url(&format!("/api/v1/call/junk.{i}"))).send("{}");
            if res.is_ok_and(|r| r.status().as_u16() == 400) {
                answered.set(answered.get() + 1);
            }
            let _ = agent.get(gateway.url(&format!("/nope-{i}"))).call();
        }
    };
    let series = || {
        let (_, body) = gateway.get("/metrics");
        let text = body.as_str().expect("metrics text").to_owned();
        assert!(!text.contains("junk") && !text.contains("nope"), "a request minted a label:\n{text}");
        text.lines().filter(|l| !l.starts_with('#')).count()
    };
    junk(0, 50);
    // The first scrape starts the background usage query behind the usage counters; measure
    // once they are there, so only the junk could add anything.
    e2e::wait_until(Duration::from_secs(20), || {
        let (_, body) = gateway.get("/metrics");
        body.as_str().is_some_and(|m| m.contains("clawgate_usage_tokens_total{")).then_some(())
    })
    .expect("usage counters appear in /metrics");
    let after_50 = series();
    junk(50, 250);
    assert_eq!(series(), after_50, "200 more distinct junk requests added series");
    let (_, body) = gateway.get("/metrics");
    let text = body.as_str().unwrap();
    let other = r#"clawgate_requests_total{transport="http",method="other",outcome="400"} "#;
    let counted: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(other))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {other}line:\n{text}"));
    assert!(answered.get() >= 200, "most junk requests were answered: {}", answered.get());
    assert!(
        counted >= answered.get(),
        "unknown methods are counted, as `other`: {counted} of {}",
        answered.get()
    );
}

/// A directory without OpenClaw agents is not `ok`: the log warns once, `status` says "no
/// OpenClaw agents found in DIR" in text and JSON (exit 1); once agents appear, both say so.
#[test]
fn an_empty_state_dir_is_reported_until_agents_appear() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("openclaw");
    std::fs::create_dir_all(&store).unwrap();
    let gateway = Gateway::start(dir.path(), &store, &["--state-check-interval", "200ms"], &[]);
    gateway.ready_worker_pid();
    let warning = format!("no OpenClaw agents found in {}: it has no agents/ directory", store.display());
    let (code, report, _) = e2e::wait_until(Duration::from_secs(10), || {
        let (code, report, took) = status(&gateway.base, &[]);
        report["agents"].is_object().then_some((code, report, took))
    })
    .expect("status shows the agents section");
    assert_eq!(code, 1, "{report}");
    assert_schema(&report, 1);
    assert_eq!(report["reasons"], serde_json::json!([warning]), "{report}");
    assert_eq!(report["agents"]["count"], 0, "{report}");
    let (code, text) = status_with(&["--url", &gateway.base], &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with(&format!("clawgate status: degraded ({warning})")), "{text}");
    assert!(text.contains(&format!("Agents    {warning}")), "{text}");

    // OpenClaw starts writing there: noticed without a restart.
    demo(&store, 2, 1, 1);
    let report = e2e::wait_until(Duration::from_secs(10), || {
        let (code, report, _) = status(&gateway.base, &[]);
        (code == 0).then_some(report)
    })
    .unwrap_or_else(|| panic!("status never became ok: {}", status(&gateway.base, &[]).1));
    assert_eq!(report["agents"]["count"], 2, "{report}");
    assert_eq!(report["agents"]["ids"], serde_json::json!(["agent1", "main"]), "{report}");
    let (_, text) = status_with(&["--url", &gateway.base], &[]);
    assert!(text.contains("Agents    2 in the state dir: agent1, main"), "{text}");

    let log = std::fs::read_to_string(dir.path().join("gateway.log")).expect("gateway log");
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("No OpenClaw agents found")).collect();
    assert_eq!(warned.len(), 1, "warned once at start: {log}");
    assert!(warned[0].contains(" WARN ") && warned[0].contains("it has no agents/ directory"), "{log}");
    assert!(log.lines().any(|l| l.contains("OpenClaw agents found.") && l.contains("agents=2")), "{log}");
}

/// An assistant message at `ts` costing `cost`, with a unique id.
fn costly_line(id: &str, ts: &str, cost: f64) -> String {
    serde_json::json!({
        "type": "message", "id": id, "parentId": null, "timestamp": ts,
        "message": {
            "role": "assistant", "provider": "anthropic", "model": "claude-sonnet-4-5", "api": "anthropic-messages",
            "content": [{"type": "text", "text": "ok"}],
            "usage": {"input": 10, "output": 20, "cacheRead": 0, "cacheWrite": 0, "totalTokens": 30,
                      "cost": {"input": cost, "output": 0.0, "cacheRead": 0.0, "cacheWrite": 0.0, "total": cost}},
            "stopReason": "stop"
        }
    })
    .to_string()
}

fn append(store: &std::path::Path, agent: &str, line: &str) {
    use std::io::Write as _;
    let transcript = std::fs::read_dir(store.join("agents").join(agent).join("sessions"))
        .expect("sessions dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("a transcript");
    let mut file = std::fs::OpenOptions::new().append(true).open(transcript).expect("open transcript");
    writeln!(file, "{line}").expect("append");
}

/// Samples of one metric family: (labels text, value).
fn samples(metrics: &str, name: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|l| {
            let (labels, value) = l.split_once("} ")?;
            Some((labels.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Budgets: the worker's exact spend against them on `/metrics` (the alert contract's names),
/// in the status document and `clawgate status`, and a `usage.budget` event on a WebSocket
/// when spend crosses one.
#[test]
fn budgets_show_spend_and_forecast_and_send_an_event_when_crossed() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 2, 2, 2);
    // Days cut in a zone where it is about noon now: no day or month ends during the test.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let hour = (now.as_secs() / 3600 % 24) as i64;
    let offset = 12 - hour;
    let zone = match offset {
        0 => "UTC".to_owned(),
        o => format!("Etc/GMT{}{}", if o > 0 { '-' } else { '+' }, o.abs()),
    };
    let iso_now = || {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let out =
            Command::new("date").args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%S.000Z"]).output();
        String::from_utf8(out.expect("date").stdout).unwrap().trim().to_owned()
    };
    append(&store, "main", &costly_line("b0000001", &iso_now(), 1.25));

    // What the worker answers for this month and today, before any budget is set.
    let probe = Gateway::start(dir.path(), &store, &[], &[]);
    probe.ready_worker_pid();
    let today_local = {
        let local = now.as_secs() as i64 + offset * 3600;
        let out =
            Command::new("date").args(["-u", "-d", &format!("@{local}"), "+%Y-%m-%d"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let month_start = format!("{}-01", &today_local[..7]);
    let month = |gateway: &Gateway| {
        gateway.call_ok(
            "usage.cost",
            &serde_json::json!({"agentScope": "all", "startDate": month_start, "endDate": today_local, "timeZone": zone}),
        )
    };
    let spend = month(&probe)["totals"]["totalCost"].as_f64().unwrap();
    assert!(spend >= 1.25, "{spend}");
    drop(probe);

    // 85% of the month's budget spent; main's day budget at most half spent.
    let month_budget = spend / 0.85;
    let day_budget = 4.0;
    let args = [
        "--budget".to_owned(),
        format!("month={month_budget}"),
        "--budget".to_owned(),
        format!("main:day={day_budget}"),
        "--budget-tz".to_owned(),
        zone.clone(),
        "--budget-interval".to_owned(),
        "300ms".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = Gateway::start(dir.path(), &store, &args, &[]);
    gateway.ready_worker_pid();
    let item = |status: &Value, period: &str, agent: &str| {
        status["budgets"]["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["period"] == period && i["agent"] == agent).cloned())
            .unwrap_or(Value::Null)
    };
    let status_doc = e2e::wait_until(Duration::from_secs(20), || {
        let st = gateway.status();
        item(&st, "month", "all")["spendUsd"].is_number().then_some(st)
    })
    .unwrap_or_else(|| panic!("no spend in status: {}", gateway.status()));
    let month_line = item(&status_doc, "month", "all");
    assert_eq!(
        month_line["spendUsd"].as_f64(),
        month(&gateway)["totals"]["totalCost"].as_f64(),
        "{month_line}"
    );
    assert_eq!(month_line["budgetUsd"].as_f64(), Some(month_budget));
    assert_eq!(month_line["level"], "warning", "{month_line}");
    assert_eq!(month_line["periodKey"], &today_local[..7]);
    let forecast = month_line["forecastUsd"].as_f64().unwrap();
    assert!(forecast >= spend && forecast <= spend * 31.0, "{month_line}");
    let day_line = item(&status_doc, "day", "main");
    assert_eq!(day_line["level"], "ok", "{day_line}");
    assert_eq!(status_doc["budgets"]["timeZone"], zone.as_str());

    // /metrics: the contract's names and labels, the same figures.
    let (_, body) = gateway.get("/metrics");
    let metrics = body.as_str().expect("metrics text").to_owned();
    let budget = samples(&metrics, "clawgate_budget_usd");
    assert!(budget.contains(&(r#"period="month",agent="all""#.to_owned(), month_budget)), "{budget:?}");
    assert!(budget.contains(&(r#"period="day",agent="main""#.to_owned(), day_budget)), "{budget:?}");
    let spent = samples(&metrics, "clawgate_spend_usd");
    assert!(spent.contains(&(r#"period="month",agent="all""#.to_owned(), spend)), "{spent:?} vs {spend}");
    let forecasts = samples(&metrics, "clawgate_spend_forecast_usd");
    assert_eq!(forecasts.len(), 1, "a forecast for monthly budgets only: {forecasts:?}");
    assert!(forecasts[0].1 >= spend, "{forecasts:?}");
    let states = samples(&metrics, "clawgate_worker_state");
    assert_eq!(states.len(), 7, "{states:?}");
    assert_eq!(states.iter().filter(|(_, v)| *v == 1.0).count(), 1, "{states:?}");
    assert!(
        states.iter().any(|(l, v)| *v == 1.0 && (l == r#"state="ready""# || l == r#"state="busy""#)),
        "{states:?}"
    );

    // `clawgate status` shows each budget.
    let (_, text) = status_with(&["--url", &gateway.base], &[]);
    assert!(text.contains(&format!("Budget    month {}, all agents: $", &today_local[..7])), "{text}");
    assert!(text.contains("· over 80%"), "{text}");
    assert!(text.contains(&format!("Budget    day {today_local}, agent main: $")), "{text}");

    // A WebSocket client hears of main's day budget being passed.
    let ws_url = gateway.base.replacen("http://", "ws://", 1) + "/ws";
    let (mut ws, _) = tungstenite::connect(ws_url).expect("WebSocket upgrade");
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = ws.get_mut() {
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;
    fn next(ws: &mut Socket) -> Value {
        loop {
            if let tungstenite::Message::Text(text) = ws.read().expect("a frame within 20 s") {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }
    assert_eq!(next(&mut ws)["event"], "connect.challenge");
    let connect = serde_json::json!({"type": "req", "id": "c1", "method": "connect", "params": {
        "minProtocol": 4, "maxProtocol": 4, "role": "operator", "scopes": ["operator.read"],
        "client": {"id": "test", "version": "e2e", "platform": "linux", "mode": "test"}, "auth": {}}});
    ws.send(tungstenite::Message::text(connect.to_string())).unwrap();
    let hello = next(&mut ws);
    assert_eq!(hello["ok"], true, "{hello}");
    assert!(
        hello["payload"]["features"]["events"].as_array().unwrap().contains(&"usage.budget".into()),
        "{hello}"
    );
    append(&store, "main", &costly_line("b0000002", &iso_now(), day_budget + 1.0));
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &Value| e["threshold"] == "100%") {
        assert!(std::time::Instant::now() < end, "no usage.budget 100% event: {seen:?}");
        let frame = next(&mut ws);
        if frame["event"] == "usage.budget" && frame["payload"]["agent"] == "main" {
            seen.push(frame["payload"].clone());
        }
    }
    let thresholds: Vec<&str> = seen.iter().filter_map(|e| e["threshold"].as_str()).collect();
    assert_eq!(thresholds, ["80%", "100%"], "{seen:?}");
    let exceeded = &seen[1];
    assert_eq!(
        (exceeded["period"].as_str(), exceeded["periodKey"].as_str()),
        (Some("day"), Some(today_local.as_str()))
    );
    assert_eq!(exceeded["level"], "exceeded");
    assert!(exceeded["spendUsd"].as_f64().unwrap() > day_budget, "{exceeded}");
    let st = gateway.status();
    assert!(st["budgets"]["eventsSent"].as_u64().unwrap() >= 2, "{st}");
    assert_eq!(item(&st, "day", "main")["level"], "exceeded", "{st}");
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).expect("gateway log");
    assert!(
        log.lines().any(|l| l.contains("Budget threshold crossed.") && l.contains("threshold=\"100%\"")),
        "{log}"
    );
}
