//! The gateway API end to end: OpenClaw protocol v4 over WebSocket (handshake conformance,
//! methods, events), the HTTP mirror, single-flight jobs, cancellation on disconnect, deadlines
//! answering stale or retryable, the job-queue bound, health latency under a flood of usage
//! calls, and OpenClaw's own npm client (`openclaw-node`) against clawgate.
//!
//! Slow worker jobs come from the worker's debug-build fault keys (`__fault__:alloc:<MiB>` holds
//! the compute thread until cancelled), never from sleeps.

use std::{
    io::Write as _,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::skeleton::demo_seeded;
use e2e::{Gateway, assert_money_eq, exclusive, http_agent, wait_until};
use serde_json::{Value, json};
use tungstenite::{Message, stream::MaybeTlsStream};

const TOKEN: &str = "s3cret";

/// These tests compare `sessions.list` counts with the manifest: seed 11 writes no archives.
fn demo(dir: &Path, agents: u32, sessions: u32, turns: u32) -> Value {
    demo_seeded(dir, agents, sessions, turns, 11)
}

fn assert_totals_eq(actual: &Value, expected: &Value) {
    for field in ["input", "output", "cacheRead", "cacheWrite", "totalTokens"] {
        assert_eq!(actual[field], expected[field], "{field}: {actual} vs {expected}");
    }
    assert_money_eq(
        actual["totalCost"].as_f64().expect("totalCost"),
        expected["totalCost"].as_f64().unwrap(),
        "totalCost",
    );
}

/// One received WebSocket frame.
#[derive(Debug)]
enum Frame {
    Json(Value),
    Close(Option<(u16, String)>),
    Gone(String),
}

/// A synchronous protocol-v4 test client; every read has a 20 s deadline.
struct Ws {
    socket: tungstenite::WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Events seen while waiting for responses.
    events: Vec<Value>,
}

fn ws_url(gateway: &Gateway, path: &str) -> String {
    format!("{}{}", gateway.base.replacen("http://", "ws://", 1), path)
}

impl Ws {
    fn open(gateway: &Gateway, path: &str) -> Ws {
        let (socket, _) = tungstenite::connect(ws_url(gateway, path)).expect("WebSocket upgrade");
        Ws::wrap(socket)
    }

    fn wrap(mut socket: tungstenite::WebSocket<MaybeTlsStream<TcpStream>>) -> Ws {
        if let MaybeTlsStream::Plain(tcp) = socket.get_mut() {
            tcp.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
            tcp.set_nodelay(true).expect("nodelay");
        }
        Ws { socket, next_id: 0, events: Vec::new() }
    }

    fn frame(&mut self) -> Frame {
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return Frame::Json(serde_json::from_str(&text).expect("JSON frame"));
                }
                Ok(Message::Close(close)) => {
                    return Frame::Close(close.map(|c| (u16::from(c.code), c.reason.to_string())));
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    panic!("no WebSocket frame within 20 s")
                }
                Err(e) => return Frame::Gone(e.to_string()),
            }
        }
    }

    fn json(&mut self) -> Value {
        match self.frame() {
            Frame::Json(v) => v,
            Frame::Gone(why) => panic!("expected a JSON frame, the connection is gone: {why}"),
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    fn send(&mut self, value: &Value) {
        self.socket.send(Message::text(value.to_string())).expect("send");
    }

    fn send_raw(&mut self, text: String) {
        self.socket.send(Message::text(text)).expect("send");
    }

    /// The server's first frame: `connect.challenge`; returns its payload.
    fn challenge(&mut self) -> Value {
        let event = self.json();
        assert_eq!(event["type"], "event", "{event}");
        assert_eq!(event["event"], "connect.challenge", "{event}");
        event["payload"].clone()
    }

    /// Reads until the server closes; returns (code, reason).
    fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.frame() {
                Frame::Json(_) => continue,
                Frame::Close(Some(close)) => return close,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Opens, answers the challenge with `connect`, and returns the client and `hello-ok`.
    fn connect(gateway: &Gateway, path: &str, token: Option<&str>) -> (Ws, Value) {
        let mut ws = Ws::open(gateway, path);
        ws.challenge();
        ws.send(&json!({"type": "req", "id": "c1", "method": "connect", "params": connect_params(token)}));
        let res = ws.json();
        assert_eq!(res["ok"], true, "connect refused: {res}");
        (ws, res["payload"].clone())
    }

    /// Sends a request without waiting; returns its id.
    fn send_request(&mut self, method: &str, params: &Value) -> String {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        self.send(&json!({"type": "req", "id": id, "method": method, "params": params}));
        id
    }

    /// Sends a request and returns its `res` frame, keeping events seen meanwhile.
    fn request(&mut self, method: &str, params: &Value) -> Value {
        let id = self.send_request(method, params);
        self.response(&id)
    }

    fn response(&mut self, id: &str) -> Value {
        loop {
            let frame = self.json();
            if frame["type"] == "res" && frame["id"] == id {
                return frame;
            }
            if frame["type"] == "event" {
                self.events.push(frame);
            }
        }
    }

    /// Waits (deadline `within`) for an event named `name`, checking kept events first.
    fn event(&mut self, name: &str, within: Duration) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(i);
        }
        let end = Instant::now() + within;
        loop {
            assert!(Instant::now() < end, "no {name} event within {within:?}");
            let frame = self.json();
            if frame["type"] == "event" && frame["event"] == name {
                return frame;
            }
            if frame["type"] == "event" {
                self.events.push(frame);
            }
        }
    }

    fn close(mut self) {
        let _ = self.socket.close(None);
        let _ = self.socket.flush();
    }
}

fn connect_params(token: Option<&str>) -> Value {
    json!({
        "minProtocol": 4, "maxProtocol": 4,
        "client": {"id": "test", "version": "e2e", "platform": "linux", "mode": "test"},
        "role": "operator", "scopes": ["operator.read"], "caps": [], "commands": [], "permissions": {},
        "auth": token.map(|t| json!({"token": t})).unwrap_or(json!({})),
    })
}

/// An authorised HTTP request → (status, `x-clawgate-cache`, body text).
fn http(
    gateway: &Gateway,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, String, String) {
    let agent = http_agent(Duration::from_secs(60));
    let url = gateway.url(path);
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = match body {
        Some(body) => {
            let mut req = agent.post(&url).header("content-type", "application/json");
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.send(body.to_string())
        }
        None => {
            let mut req = if method == "GET" { agent.get(&url) } else { agent.head(&url) };
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.call()
        }
    };
    let mut res = result.expect("HTTP request");
    let cache = res.headers().get("x-clawgate-cache").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let text = res.body_mut().with_config().limit(1 << 30).read_to_string().expect("body");
    (res.status().as_u16(), cache, text)
}

fn status(gateway: &Gateway, token: Option<&str>) -> Value {
    let (code, _, text) = http(gateway, "GET", "/api/v1/status", None, token);
    assert_eq!(code, 200, "{text}");
    serde_json::from_str(&text).expect("status JSON")
}

#[test]
fn handshake_conformance_methods_and_the_http_mirror() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 2, 3, 4);
    let gateway = Gateway::start(dir.path(), &store, &["--token", TOKEN, "--tick-interval", "200ms"], &[]);

    // The challenge comes first, with a fresh nonce per connection.
    let mut ws = Ws::open(&gateway, "/");
    let first = ws.challenge();
    assert_eq!(first["nonce"].as_str().expect("nonce").len(), 36, "{first}");
    assert!(first["ts"].as_i64().expect("ts") > 1_700_000_000_000);
    // Wrong first frame: INVALID_REQUEST, then close 1008.
    ws.send(&json!({"type": "req", "id": "h1", "method": "health"}));
    let res = ws.json();
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert_eq!(res["error"]["message"], "invalid handshake: first request must be connect");
    assert_eq!(ws.expect_close().0, 1008);

    // Bad token: INVALID_REQUEST with OpenClaw's auth details, close 1008.
    let mut ws = Ws::open(&gateway, "/ws");
    assert_ne!(ws.challenge()["nonce"], first["nonce"]);
    ws.send(
        &json!({"type": "req", "id": "c1", "method": "connect", "params": connect_params(Some("wrong"))}),
    );
    let res = ws.json();
    assert_eq!(res["error"]["code"], "INVALID_REQUEST", "{res}");
    assert_eq!(res["error"]["details"]["code"], "AUTH_TOKEN_MISMATCH", "{res}");
    assert_eq!(ws.expect_close().0, 1008);

    // Protocol mismatch: details name the expected protocol, close 1002.
    let mut ws = Ws::open(&gateway, "/ws");
    ws.challenge();
    let mut params = connect_params(Some(TOKEN));
    params["minProtocol"] = json!(1);
    params["maxProtocol"] = json!(3);
    ws.send(&json!({"type": "req", "id": "c1", "method": "connect", "params": params}));
    let res = ws.json();
    assert_eq!(res["error"]["message"], "protocol mismatch", "{res}");
    assert_eq!(res["error"]["details"]["expectedProtocol"], 4, "{res}");
    assert_eq!(ws.expect_close().0, 1002);

    // A pre-auth frame over 64 KiB: close 1009.
    let mut ws = Ws::open(&gateway, "/ws");
    ws.challenge();
    ws.send_raw(format!(
        r#"{{"type":"req","id":"c1","method":"connect","params":{{"pad":"{}"}}}}"#,
        "x".repeat(100 << 10)
    ));
    assert_eq!(ws.expect_close().0, 1009);

    // Not JSON: a normal close, as OpenClaw (its parse error path); JSON that is not a request
    // frame: 1008 without an answer; invalid connect params: 1008 with a clear message.
    let mut ws = Ws::open(&gateway, "/ws");
    ws.challenge();
    ws.send_raw("hello?".into());
    assert_eq!(ws.expect_close().0, 1000);
    let mut ws = Ws::open(&gateway, "/ws");
    ws.challenge();
    ws.send(&json!({"type": "req", "id": "c1", "method": "connect", "params": {}, "extra": 1}));
    assert_eq!(ws.expect_close(), (1008, "invalid request frame".to_owned()));
    let mut ws = Ws::open(&gateway, "/ws");
    ws.challenge();
    let mut params = connect_params(Some(TOKEN));
    params["client"]["mode"] = json!("martian");
    ws.send(&json!({"type": "req", "id": "c1", "method": "connect", "params": params}));
    let res = ws.json();
    assert!(
        res["error"]["message"].as_str().unwrap().starts_with("invalid connect params: at /client/mode"),
        "{res}"
    );
    assert_eq!(ws.expect_close().0, 1008);

    // A good connect: hello-ok with OpenClaw's fields.
    let (mut ws, hello) = Ws::connect(&gateway, "/ws", Some(TOKEN));
    assert_eq!(hello["type"], "hello-ok");
    assert_eq!(hello["protocol"], 4);
    assert_eq!(hello["server"]["connId"].as_str().map(str::len), Some(36), "{hello}");
    let methods: Vec<&str> =
        hello["features"]["methods"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for m in [
        "health",
        "status",
        "sessions.usage",
        "usage.cost",
        "sessions.usage.timeseries",
        "sessions.usage.logs",
        "sessions.list",
    ] {
        assert!(methods.contains(&m), "{m} not advertised: {methods:?}");
    }
    assert!(hello["features"]["events"].as_array().unwrap().contains(&json!("usage.updated")));
    assert_eq!(hello["policy"]["tickIntervalMs"], 200);
    assert!(hello["policy"]["maxPayload"].as_u64().unwrap() >= 64 << 10);
    assert!(hello["policy"]["maxBufferedBytes"].as_u64().is_some());
    assert_eq!(hello["auth"]["role"], "operator");
    assert_eq!(hello["snapshot"]["authMode"], "token");
    assert!(hello["snapshot"]["health"]["eventLoop"]["delayP99Ms"].is_number(), "{hello}");

    // Methods.
    let health = ws.request("health", &json!({}));
    assert_eq!(health["payload"]["ok"], true, "{health}");
    for field in ["delayMaxMs", "delayP99Ms", "utilization"] {
        assert!(health["payload"]["eventLoop"][field].is_number(), "{field}: {health}");
    }
    let st = ws.request("status", &json!({}));
    assert!(st["payload"]["worker"]["state"].is_string(), "{st}");
    assert!(st["payload"]["eventLoop"]["delayP99Ms"].is_number(), "{st}");
    // An unknown method needs operator.admin (OpenClaw): this client has operator.read.
    let res = ws.request("no.such.method", &json!({}));
    assert_eq!(res["error"]["code"], "FORBIDDEN");
    assert_eq!(res["error"]["message"], "missing scope: operator.admin");
    // After connect, a frame that is not a request gets an error answer; the connection stays.
    ws.send(&json!({"type": "req", "id": "bad", "method": "health", "surprise": true}));
    let res = ws.response("bad");
    assert!(res["error"]["message"].as_str().unwrap().starts_with("invalid request frame: "), "{res}");
    ws.send_raw("not json".into());
    assert_eq!(ws.request("health", &json!({}))["ok"], true);
    let res = ws.request("sessions.usage", &json!({"limit": 0}));
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert!(res["error"]["message"].as_str().unwrap().starts_with("invalid sessions.usage params"), "{res}");

    let all = json!({"agentScope": "all", "range": "all", "limit": 1000});
    let usage = ws.request("sessions.usage", &all);
    assert_eq!(usage["ok"], true, "{usage}");
    assert_totals_eq(&usage["payload"]["totals"], &manifest["totals"]);
    let cost = ws.request("usage.cost", &json!({"agentScope": "all", "range": "all"}));
    assert_totals_eq(&cost["payload"]["totals"], &manifest["totals"]);
    let list = ws.request("sessions.list", &json!({}));
    let rows = list["payload"]["sessions"].as_array().expect("sessions.list rows");
    // OpenClaw's shape: the store's sessions (not archived transcripts), with its paging fields.
    assert_eq!(list["payload"]["count"].as_u64(), manifest["sessions"].as_u64(), "{list}");
    assert_eq!(list["payload"]["totalCount"].as_u64(), manifest["sessions"].as_u64(), "{list}");
    assert_eq!((&list["payload"]["hasMore"], &list["payload"]["nextOffset"]), (&json!(false), &Value::Null));
    assert!(rows.iter().all(|r| r["inputTokens"].is_u64() && r["outputTokens"].is_u64()), "{list}");
    assert!(
        rows.windows(2).all(|w| w[0]["updatedAt"].as_u64() >= w[1]["updatedAt"].as_u64()),
        "newest first"
    );
    assert_eq!(ws.request("sessions.list", &json!({"limit": 2}))["payload"]["count"], 2);
    assert_eq!(ws.request("sessions.list", &json!({"bogus": 1}))["error"]["code"], "INVALID_REQUEST");
    let key = rows[0]["key"].as_str().unwrap();
    let series = ws.request("sessions.usage.timeseries", &json!({"key": key}));
    // Routed to the worker: an answer, or its own INVALID_REQUEST while unsupported.
    assert!(series["ok"] == true || series["error"]["code"] == "INVALID_REQUEST", "{series}");
    let logs = ws.request("sessions.usage.logs", &json!({}));
    assert_eq!(logs["error"]["message"], "key is required for logs", "{logs}");

    // Ticks keep coming, with a per-client sequence.
    let tick = ws.event("tick", Duration::from_secs(5));
    let next = ws.event("tick", Duration::from_secs(5));
    assert!(tick["payload"]["ts"].is_number());
    assert!(next["seq"].as_u64() > tick["seq"].as_u64(), "{tick} then {next}");

    // The HTTP mirror: same handlers, same answers.
    let (code, cache, text) = http(&gateway, "POST", "/api/v1/call/sessions.usage", Some(&all), Some(TOKEN));
    assert_eq!(code, 200, "{text}");
    assert!(["miss", "shared", "hit"].contains(&cache.as_str()), "{cache}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_totals_eq(&body["payload"]["totals"], &manifest["totals"]);
    let (code, _, text) = http(&gateway, "POST", "/api/v1/call/sessions.list", Some(&json!({})), Some(TOKEN));
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["payload"]["count"], list["payload"]["count"]);
    let (code, _, text) = http(&gateway, "POST", "/api/v1/call/health", Some(&json!({})), Some(TOKEN));
    assert_eq!(code, 200);
    assert!(
        serde_json::from_str::<Value>(&text).unwrap()["payload"]["eventLoop"]["delayMaxMs"].is_number(),
        "{text}"
    );
    assert_eq!(http(&gateway, "POST", "/api/v1/call/sessions.usage", Some(&all), None).0, 401);
    let st = status(&gateway, Some(TOKEN));
    assert!(
        st["eventLoop"]["utilization"].is_number() && st["cache"]["jobs"]["started"].as_u64() >= Some(1),
        "{st}"
    );

    // `/` is still the dashboard for browsers; `/ws` wants an upgrade.
    let (code, _, page) = http(&gateway, "GET", "/", None, None);
    assert_eq!(code, 200);
    assert!(page.to_ascii_lowercase().contains("<html"), "dashboard HTML expected");
    assert_eq!(http(&gateway, "GET", "/ws", None, None).0, 426);

    // Prometheus metrics, behind the token.
    assert_eq!(http(&gateway, "GET", "/metrics", None, None).0, 401);
    let (code, _, metrics) = http(&gateway, "GET", "/metrics", None, Some(TOKEN));
    assert_eq!(code, 200);
    for needle in [
        r#"clawgate_requests_total{transport="ws",method="sessions.usage""#,
        r#"clawgate_requests_total{transport="http",method="/api/v1/status",outcome="200"}"#,
        r#"clawgate_request_duration_seconds_bucket{le="0.005",transport="ws",method="health"}"#,
        "clawgate_runtime_lag_p99_seconds ",
        "# TYPE clawgate_worker_restarts counter",
        r#"clawgate_rss_bytes{process="gateway"}"#,
        r#"clawgate_cache_lookups_total{result="miss"}"#,
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}:\n{metrics}");
    }
    let usage_metrics = wait_until(Duration::from_secs(20), || {
        let (_, _, m) = http(&gateway, "GET", "/metrics", None, Some(TOKEN));
        m.contains(r#"clawgate_usage_tokens_total{by="agent""#).then_some(m)
    })
    .expect("usage counters appear in /metrics");
    assert!(
        usage_metrics.contains(r#"clawgate_usage_cost_usd_total{by="model",provider="#),
        "{usage_metrics}"
    );

    // A web page from another origin cannot connect (OpenClaw's CONTROL_UI_ORIGIN_NOT_ALLOWED).
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(ws_url(&gateway, "/ws")).unwrap();
    request.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    let (socket, _) = tungstenite::connect(request).expect("upgrade");
    let mut evil = Ws::wrap(socket);
    evil.challenge();
    evil.send(
        &json!({"type": "req", "id": "c1", "method": "connect", "params": connect_params(Some(TOKEN))}),
    );
    assert_eq!(evil.json()["error"]["details"]["code"], "CONTROL_UI_ORIGIN_NOT_ALLOWED");
    assert_eq!(evil.expect_close().0, 1008);

    // Failed authentications from loopback are never rate limited (OpenClaw exempts loopback;
    // other addresses are, see auth::limiter); probes stay open.
    for _ in 0..30 {
        assert_eq!(http(&gateway, "POST", "/api/v1/call/health", Some(&json!({})), Some("wrong")).0, 401);
    }
    assert_eq!(http(&gateway, "GET", "/api/v1/status", None, Some(TOKEN)).0, 200);
    assert_eq!(http(&gateway, "GET", "/healthz", None, None).0, 200);

    // A client's close frame is answered (a clean close, as OpenClaw; not a dropped socket).
    let close = tungstenite::protocol::CloseFrame { code: 1000.into(), reason: "client done".into() };
    ws.socket.close(Some(close)).expect("send close");
    let answered = loop {
        match ws.socket.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| (u16::from(f.code), f.reason.to_string())),
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break Some((1000, "client done".into())),
            Err(e) => panic!("the gateway dropped the socket instead of answering the close: {e}"),
        }
    };
    assert_eq!(answered, Some((1000, "client done".to_owned())));
}

#[test]
fn usage_updated_is_pushed_when_the_data_changes() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 1, 2, 3);
    let gateway = Gateway::start(dir.path(), &store, &["--refresh-interval", "300ms"], &[]);
    gateway.ready_worker_pid();
    let all = json!({"agentScope": "all", "range": "all"});
    // Asked over HTTP only: not re-run by the refresher, since nobody would be told.
    assert_eq!(http(&gateway, "POST", "/api/v1/call/usage.cost", Some(&all), None).0, 200);
    let (mut ws, _) = Ws::connect(&gateway, "/", None);
    let first = ws.request("sessions.usage", &all);
    assert_totals_eq(&first["payload"]["totals"], &manifest["totals"]);
    // The first answer for a query counts as new data.
    let event = ws.event("usage.updated", Duration::from_secs(10));
    assert_eq!(event["payload"]["method"], "sessions.usage", "{event}");
    assert_eq!(event["payload"]["query"]["agentScope"], "all", "{event}");

    // The refresher re-runs the query; unchanged data pushes nothing.
    let refreshed = |n: u64| {
        wait_until(Duration::from_secs(15), || {
            let st = status(&gateway, None);
            (st["cache"]["jobs"]["refreshes"].as_u64()? >= n && st["cache"]["jobsRunning"] == 0).then_some(st)
        })
        .unwrap_or_else(|| panic!("the refresher did not run {n} times"))
    };
    let before = refreshed(2);
    ws.request("health", &json!({}));
    assert!(ws.events.iter().all(|e| e["event"] != "usage.updated"), "no change, no push: {:?}", ws.events);
    assert_eq!(before["cache"]["eventsSent"], 1, "{before}");

    // New data in a transcript: a push arrives without the client asking.
    let transcript = std::fs::read_dir(store.join("agents/main/sessions"))
        .expect("sessions dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("a transcript");
    let mut file = std::fs::OpenOptions::new().append(true).open(&transcript).expect("open transcript");
    writeln!(file, "{}", crate::skeleton::assistant_line("2026-11-20T10:00:00.000Z", 1000, 2000, 0.5, 8))
        .expect("append");
    drop(file);
    let pushed = ws.event("usage.updated", Duration::from_secs(15));
    assert_eq!(pushed["payload"]["method"], "sessions.usage", "{pushed}");
    let again = ws.request("sessions.usage", &all);
    let totals = &again["payload"]["totals"];
    assert_eq!(totals["input"].as_u64(), Some(manifest["totals"]["input"].as_u64().unwrap() + 1000));
    assert_eq!(totals["output"].as_u64(), Some(manifest["totals"]["output"].as_u64().unwrap() + 2000));
    ws.close();

    let log = std::fs::read_to_string(dir.path().join("gateway.log")).expect("gateway log");
    let plain: String =
        log.split('\x1b').map(|part| part.split_once('m').map_or(part, |(_, rest)| rest)).collect();
    let refreshed_jobs: Vec<&str> = plain
        .lines()
        .filter(|l| l.contains("Usage job done.") && l.contains(r#"origin="background""#))
        .collect();
    assert!(refreshed_jobs.iter().any(|l| l.contains(r#"method="sessions.usage""#)), "{plain}");
    assert!(!refreshed_jobs.iter().any(|l| l.contains(r#"method="usage.cost""#)), "{refreshed_jobs:#?}");
}

#[test]
fn one_job_per_query_disconnects_cancel_deadlines_answer_stale_or_retryable() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 2, 3, 4);
    let args = ["--request-timeout", "4s", "--max-queued-jobs", "2", "--refresh-interval", "0"];
    let gateway = Gateway::start(dir.path(), &store, &args, &[]);
    gateway.ready_worker_pid();
    let warm = json!({"agentScope": "all", "range": "all"});
    let warmed = gateway.call_ok("sessions.usage", &warm);
    // Holds the worker's compute thread until cancelled (debug builds).
    let slow = json!({"key": "__fault__:alloc:4"});
    let cache = |gateway: &Gateway| status(gateway, None)["cache"].clone();

    // Twelve clients ask the same slow question at once: one worker job.
    let mut clients: Vec<Ws> = (0..12).map(|_| Ws::connect(&gateway, "/ws", None).0).collect();
    for client in &mut clients {
        client.send_request("sessions.usage", &slow);
    }
    let joined = wait_until(Duration::from_secs(3), || {
        let c = cache(&gateway);
        (c["waiters"] == 12).then_some(c)
    })
    .unwrap_or_else(|| panic!("12 waiters expected: {}", cache(&gateway)));
    assert_eq!(joined["jobsRunning"], 1, "{joined}");
    assert_eq!(joined["jobs"]["started"], 2, "one job for the warm-up, one for the twelve: {joined}");
    assert_eq!(status(&gateway, None)["worker"]["jobsInFlight"], 1);

    // Eleven leave: the job goes on for the twelfth. The last leaves: the job is cancelled.
    let last = clients.pop().unwrap();
    for client in clients {
        client.close();
    }
    let c = wait_until(Duration::from_secs(3), || Some(cache(&gateway)).filter(|c| c["waiters"] == 1))
        .expect("eleven waiters gone");
    assert_eq!((c["jobsRunning"].clone(), c["jobs"]["cancelled"].clone()), (json!(1), json!(0)), "{c}");
    last.close();
    wait_until(Duration::from_secs(3), || {
        let st = status(&gateway, None);
        (st["cache"]["jobs"]["cancelled"] == 1
            && st["cache"]["jobsRunning"] == 0
            && st["worker"]["jobsInFlight"] == 0)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the job was not cancelled: {}", status(&gateway, None)));
    // The worker really stopped: its compute thread takes the next job at once.
    let started = Instant::now();
    let (code, cache_header, _) = http(&gateway, "POST", "/api/v1/call/sessions.usage", Some(&warm), None);
    assert_eq!((code, cache_header.as_str()), (200, "miss"));
    assert!(started.elapsed() < Duration::from_secs(3), "worker still busy: {:?}", started.elapsed());

    // An HTTP client that hangs up cancels its job too.
    let impatient = http_agent(Duration::from_millis(700));
    let gone = impatient.post(gateway.url("/api/v1/call/sessions.usage")).send(slow.to_string());
    assert!(gone.is_err(), "the slow call must outlast the client's timeout");
    wait_until(Duration::from_secs(3), || (cache(&gateway)["jobs"]["cancelled"] == 2).then_some(()))
        .unwrap_or_else(|| panic!("HTTP disconnect did not cancel: {}", cache(&gateway)));

    // Past the deadline with nothing cached: UNAVAILABLE, retryable; the job keeps running.
    let started = Instant::now();
    let (code, body) = gateway.call("sessions.usage", &slow);
    let took = started.elapsed();
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert_eq!(body["error"]["retryable"], true);
    assert!(body["error"]["retryAfterMs"].as_u64() > Some(0), "{body}");
    assert!(took >= Duration::from_millis(3900) && took < Duration::from_secs(8), "answered after {took:?}");
    let c = cache(&gateway);
    assert_eq!((c["jobsRunning"].clone(), c["jobs"]["deadlineExpired"].clone()), (json!(1), json!(1)), "{c}");

    // With the worker stuck, a cached query is answered at its deadline with the last good answer, marked stale.
    let (code, cache_header, text) = http(&gateway, "POST", "/api/v1/call/sessions.usage", Some(&warm), None);
    assert_eq!((code, cache_header.as_str()), (200, "stale"), "{text}");
    let stale: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stale["payload"]["cacheStatus"]["status"], "stale");
    assert_eq!(stale["payload"]["totals"], warmed["totals"]);

    // Two jobs running = the queue bound: a new query is refused at once with 429.
    let started = Instant::now();
    let (code, body) = gateway.call("usage.cost", &json!({"range": "7d"}));
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert_eq!(body["error"]["retryable"], true);
    assert!(started.elapsed() < Duration::from_secs(1), "429 must be immediate: {:?}", started.elapsed());
    // Over WebSocket the same refusal is a retryable error frame.
    let (mut ws, _) = Ws::connect(&gateway, "/", None);
    let res = ws.request("usage.cost", &json!({"range": "30d"}));
    assert_eq!(res["error"]["code"], "UNAVAILABLE", "{res}");
    assert_eq!(res["error"]["retryable"], true, "{res}");
    ws.close();
}

/// A keep-alive HTTP/1.1 GET client over one TCP connection, with a 5 s read deadline.
struct RawHttp {
    stream: std::io::BufReader<TcpStream>,
    host: String,
}

impl RawHttp {
    fn connect(base: &str) -> RawHttp {
        let host = base.trim_start_matches("http://").to_owned();
        let stream = TcpStream::connect(&host).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
        RawHttp { stream: std::io::BufReader::new(stream), host }
    }

    /// `GET path` → (status, body).
    fn get(&mut self, path: &str) -> (u16, String) {
        use std::io::{BufRead as _, Read as _};
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.get_mut().write_all(request.as_bytes()).expect("send request");
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("status line");
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("content-length");
                }
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).expect("body");
        (status, String::from_utf8(body).expect("utf-8 body"))
    }
}

/// Latency percentiles of a sample, in ms.
fn percentiles(mut samples: Vec<Duration>) -> (usize, f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1]);
    (samples.len(), at(0.5), at(0.99), ms(*samples.last().unwrap()))
}

#[test]
fn health_stays_fast_under_a_flood_of_slow_usage_calls() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 4, 40, 20); // ~28 MB: a cold parse takes the debug worker over a second
    let gateway = Arc::new(Gateway::start(dir.path(), &store, &["--request-timeout", "3s"], &[]));
    gateway.ready_worker_pid();
    let stop = Arc::new(AtomicBool::new(false));
    let flood_for = Duration::from_secs(6);
    let (ok, stale, unavailable, sent) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );

    // Probes: HTTP /healthz and WebSocket `health`, each on its own connection, every 10 ms.
    let http_probe = {
        let (gateway, stop) = (Arc::clone(&gateway), Arc::clone(&stop));
        std::thread::spawn(move || {
            // A minimal keep-alive HTTP/1.1 client, so the figure is the gateway's, not a client
            // library's (debug builds of a full client add their own milliseconds).
            let mut probe = RawHttp::connect(&gateway.base);
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (status, body) = probe.get("/healthz");
                samples.push(started.elapsed());
                assert_eq!((status, body.as_str()), (200, r#"{"ok":true,"status":"live"}"#));
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };
    let ws_probe = {
        let (gateway, stop) = (Arc::clone(&gateway), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut ws, _) = Ws::connect(&gateway, "/ws", None);
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let res = ws.request("health", &json!({}));
                samples.push(started.elapsed());
                assert_eq!(res["ok"], true, "{res}");
                std::thread::sleep(Duration::from_millis(10));
            }
            ws.close();
            samples
        })
    };

    // The flood: 24 WebSocket and 4 HTTP clients, each calling usage methods back to back over
    // 20 distinct queries (answers up to 200 session rows), cold cache.
    let queries: Vec<(&str, Value)> = ["all", "1y", "90d", "30d", "7d"]
        .iter()
        .flat_map(|range| {
            [
                ("sessions.usage", json!({"agentScope": "all", "range": range, "limit": 200})),
                ("sessions.usage", json!({"agentId": "main", "range": range, "limit": 200})),
                ("usage.cost", json!({"agentScope": "all", "range": range})),
                ("usage.cost", json!({"range": range, "mode": "specific", "utcOffset": "UTC+5:30"})),
            ]
        })
        .collect();
    let queries = Arc::new(queries);
    let barrier = Arc::new(Barrier::new(28));
    let mut flood = Vec::new();
    for client in 0..28usize {
        let (gateway, queries, barrier) = (Arc::clone(&gateway), Arc::clone(&queries), Arc::clone(&barrier));
        let (ok, stale, unavailable, sent) =
            (Arc::clone(&ok), Arc::clone(&stale), Arc::clone(&unavailable), Arc::clone(&sent));
        flood.push(std::thread::spawn(move || {
            // The load generator shares the machine's two cores with what it measures: it runs
            // at a lower priority, as remote clients would not compete for the gateway's CPU.
            // SAFETY: getpriority/setpriority on this thread's own id only read and lower its
            // scheduling weight (10 nice levels below the test's own).
            unsafe {
                let tid = libc::gettid() as libc::id_t;
                let base = libc::getpriority(libc::PRIO_PROCESS, tid);
                libc::setpriority(libc::PRIO_PROCESS, tid, (base + 10).min(19));
            }
            let count = |text: &str| {
                // Classify from the frame's head: parsing MB-sized answers here would only load the machine.
                let head = &text[..text.len().min(200)];
                if head.contains(r#""ok":true"#) {
                    ok.fetch_add(1, Ordering::Relaxed);
                    // The worker writes cacheStatus near the end; look only there.
                    let mut from = text.len().saturating_sub(4096);
                    while !text.is_char_boundary(from) {
                        from -= 1;
                    }
                    if text[from..].contains(r#""cacheStatus":{"status":"stale""#) {
                        stale.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    assert!(
                        text.contains(r#""code":"UNAVAILABLE""#) && text.contains(r#""retryable":true"#),
                        "{head}"
                    );
                    unavailable.fetch_add(1, Ordering::Relaxed);
                }
            };
            let started;
            if client < 24 {
                let (mut ws, _) = Ws::connect(&gateway, "/ws", None);
                barrier.wait();
                started = Instant::now();
                let mut i = client;
                while started.elapsed() < flood_for {
                    let (method, params) = &queries[i % queries.len()];
                    let id = ws.send_request(method, params);
                    sent.fetch_add(1, Ordering::Relaxed);
                    loop {
                        match ws.socket.read().expect("flood read") {
                            Message::Text(text) if text.starts_with(r#"{"type":"res""#) => {
                                assert!(text.contains(&format!(r#""id":"{id}""#)));
                                count(&text);
                                break;
                            }
                            _ => continue,
                        }
                    }
                    i += 7;
                }
                ws.close();
            } else {
                let agent = http_agent(Duration::from_secs(30));
                barrier.wait();
                started = Instant::now();
                let mut i = client;
                while started.elapsed() < flood_for {
                    let (method, params) = &queries[i % queries.len()];
                    sent.fetch_add(1, Ordering::Relaxed);
                    let mut res = agent
                        .post(gateway.url(&format!("/api/v1/call/{method}")))
                        .send(params.to_string())
                        .expect("flood call");
                    let text = res.body_mut().with_config().limit(1 << 30).read_to_string().expect("body");
                    count(&text);
                    i += 5;
                }
            }
        }));
    }
    for t in flood {
        t.join().expect("flood client");
    }
    stop.store(true, Ordering::Relaxed);
    let http_samples = http_probe.join().expect("http probe");
    let ws_samples = ws_probe.join().expect("ws probe");
    let (hn, h50, h99, hmax) = percentiles(http_samples);
    let (wn, w50, w99, wmax) = percentiles(ws_samples);
    let st = status(&gateway, None);
    let jobs = &st["cache"]["jobs"];
    eprintln!(
        "flood: {} usage calls sent, {} ok ({} stale), {} UNAVAILABLE; worker jobs started {}, lookups {}; \
         /healthz n={hn} p50={h50:.2}ms p99={h99:.2}ms max={hmax:.2}ms; WS health n={wn} p50={w50:.2}ms p99={w99:.2}ms \
         max={wmax:.2}ms; gateway eventLoop {}",
        sent.load(Ordering::Relaxed),
        ok.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed),
        unavailable.load(Ordering::Relaxed),
        jobs["started"],
        st["cache"]["lookups"],
        st["eventLoop"],
    );
    assert!(ok.load(Ordering::Relaxed) > 0, "no usage call succeeded");
    assert!(
        jobs["started"].as_u64().unwrap() < sent.load(Ordering::Relaxed),
        "identical concurrent calls must share jobs"
    );
    assert!(hn >= 100 && wn >= 100, "too few probes: {hn} http, {wn} ws");
    // The 5 ms p99 target is measured and printed by `clawgate-proof` on release binaries
    // (BENCHMARKS.md). Here, on debug binaries sharing two cores with the flood, the bound only
    // catches a runtime that blocks (parsing or waiting on the worker would cost 100s of ms)
    // without failing on scheduler noise.
    assert!(h99 <= 25.0, "/healthz p99 {h99:.2} ms > 25 ms (max {hmax:.2} ms)");
    assert!(w99 <= 25.0, "WS health p99 {w99:.2} ms > 25 ms (max {wmax:.2} ms)");
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// `tests/openclaw-client` with `openclaw-node` installed from the npm registry (`npm ci`; .ci/run
/// does this too, the test only fills in a missing install).
fn openclaw_client_dir() -> PathBuf {
    let dir = repo_root().join("tests/openclaw-client");
    if !dir.join("node_modules/openclaw-node/package.json").exists() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("npm must be installed to run OpenClaw's client (see README)");
        assert!(out.status.success(), "npm ci failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    dir
}

#[test]
fn openclaw_node_client_gets_sessions_usage() {
    let _lock = exclusive();
    let client_dir = openclaw_client_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 2, 3, 4);
    let gateway = Gateway::start(dir.path(), &store, &["--token", TOKEN], &[]);

    // openclaw-node uses the global WebSocket: built in from node 22, behind a flag in node 20-21.
    let version =
        Command::new("node").arg("--version").output().expect("node must be installed (see README)");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let major: u32 =
        version.trim().trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    let mut node = Command::new("node");
    if major < 22 {
        node.arg("--experimental-websocket");
    }
    let identity = dir.path().join("device-identity.json");
    let mut child = node
        .arg("call.js")
        .arg(ws_url(&gateway, "/"))
        .arg(TOKEN)
        .arg("sessions.usage")
        .arg(json!({"agentScope": "all", "range": "all", "limit": 1000}).to_string())
        .arg(&identity)
        .current_dir(&client_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let finished = wait_until(Duration::from_secs(90), || child.try_wait().expect("wait node"));
    if finished.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        finished.is_some() && out.status.success(),
        "openclaw-node failed ({version}): {stderr}\n{stdout}"
    );
    let result: Value = serde_json::from_str(stdout.trim()).expect("client output JSON");
    assert_eq!(result["hello"]["type"], "hello-ok");
    assert_eq!(result["hello"]["protocol"], 4);
    assert_totals_eq(&result["payload"]["totals"], &manifest["totals"]);
    assert_eq!(
        result["payload"]["sessions"].as_array().map(Vec::len) as Option<usize>,
        manifest["sessions"].as_u64().map(|n| n as usize)
    );
    assert_eq!(result["health"]["ok"], true, "{}", result["health"]);
    assert_eq!(result["errors"], json!([]));
    // The client signed its device identity; the gateway verified it and logged the id.
    let device_id = result["deviceId"].as_str().expect("deviceId");
    assert_eq!(device_id.len(), 64);
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).expect("gateway log");
    assert!(log.contains(device_id), "verified device {device_id} not in the gateway log");
}

/// Answers bigger than one WebSocket frame (64 KiB) go out as fragments that point into the
/// cached answer; a client reassembles exactly what the HTTP mirror serves. Malformed upgrade
/// requests get a clear HTTP error, not a connection.
#[test]
fn large_answers_arrive_whole_and_bad_upgrades_are_refused() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo(&store, 2, 60, 4);
    let gateway = Gateway::start(dir.path(), &store, &["--token", TOKEN], &[]);

    let all = json!({"agentScope": "all", "range": "all", "limit": 1000});
    let (mut ws, _) = Ws::connect(&gateway, "/ws", Some(TOKEN));
    let usage = ws.request("sessions.usage", &all);
    assert_eq!(usage["ok"], true, "{usage}");
    let size = usage["payload"].to_string().len();
    assert!(size > 4 * 64 * 1024, "the answer must span several fragments, it has {size} bytes");
    assert_totals_eq(&usage["payload"]["totals"], &manifest["totals"]);
    assert!(usage["payload"]["sessions"].as_array().expect("sessions").len() >= 120);
    let (code, _, text) = http(&gateway, "POST", "/api/v1/call/sessions.usage", Some(&all), Some(TOKEN));
    assert_eq!(code, 200, "{text}");
    let mirror: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(mirror["payload"]["sessions"], usage["payload"]["sessions"]);
    assert_eq!(mirror["payload"]["aggregates"], usage["payload"]["aggregates"]);
    // The connection carries on after a fragmented message.
    assert_eq!(ws.request("health", &json!({}))["ok"], true);
    ws.close();

    let addr = gateway.addr();
    let raw = |request: String| -> String {
        let mut stream = TcpStream::connect(&addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = [0u8; 256];
        let n = std::io::Read::read(&mut stream, &mut head).expect("response");
        String::from_utf8_lossy(&head[..n]).into_owned()
    };
    let upgrade = |extra: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
        )
    };
    let no_key = raw(upgrade("Sec-WebSocket-Version: 13\r\n"));
    assert!(no_key.starts_with("HTTP/1.1 400"), "{no_key}");
    assert!(no_key.contains("Sec-WebSocket-Key header missing"), "{no_key}");
    let old_version =
        raw(upgrade("Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
    assert!(old_version.starts_with("HTTP/1.1 400"), "{old_version}");
    let ok = raw(upgrade("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    // RFC 6455's own example key and accept value.
    assert!(ok.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{ok}");
}

/// SIGTERM with a WebSocket client connected and an idle keep-alive HTTP connection open: the
/// gateway stops accepting, ends both, stops its worker and exits 0 promptly (the accept loop
/// is clawgate's own; upgraded connections run on the bulk runtime).
#[test]
fn sigterm_stops_the_gateway_with_connections_open() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 3, 4);
    let mut gateway = Gateway::start(dir.path(), &store, &[], &[]);
    let worker = gateway.ready_worker_pid();
    let (mut ws, _) = Ws::connect(&gateway, "/ws", None);
    assert_eq!(ws.request("health", &json!({}))["ok"], true);
    // A keep-alive connection that has been answered and now sits idle.
    let addr = gateway.addr();
    let mut idle = TcpStream::connect(&addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).unwrap();
    let mut head = [0u8; 512];
    let n = std::io::Read::read(&mut idle, &mut head).expect("healthz response");
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head[..n]));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gateway.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = gateway.wait_exit(Duration::from_secs(15)).expect("the gateway did not exit within 15 s");
    assert!(status.success(), "exit status {status}");
    // Events already in flight may come first.
    let ended = (0..5).any(|_| matches!(ws.frame(), Frame::Gone(_) | Frame::Close(_)));
    assert!(ended, "the WebSocket outlived the gateway");
    assert_eq!(
        std::io::Read::read(&mut idle, &mut head).unwrap_or(0),
        0,
        "the idle connection was not closed"
    );
    let gone = wait_until(Duration::from_secs(5), || (!e2e::alive(worker)).then_some(()));
    assert!(gone.is_some(), "worker {worker} outlived its gateway");
    // A clean stop logs no warning: the worker's socket closing under it is no bad frame.
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).expect("gateway log");
    assert!(!log.contains(" WARN "), "a clean stop logged a warning:\n{log}");
}

/// A client that opens a connection and never finishes its request head (a slowloris) is cut
/// off after the header-read timeout instead of holding a socket for good; others are served.
#[test]
fn a_request_head_never_finished_is_cut_off() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    let gateway = Gateway::start(dir.path(), &store, &["--header-read-timeout", "1s"], &[]);
    let addr = gateway.addr();
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    slow.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes()).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let read = std::io::Read::read(&mut slow, &mut buf);
    let took = started.elapsed();
    match &read {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            panic!("the unfinished request still held its connection after {took:?}")
        }
        // Closed, or an error response before the close.
        Ok(0) | Err(_) => {}
        Ok(n) => assert!(buf[..*n].starts_with(b"HTTP/1.1 4"), "{}", String::from_utf8_lossy(&buf[..*n])),
    }
    assert!(took >= Duration::from_millis(900), "cut off after {took:?}, before the 1 s timeout");
    let (code, body) = gateway.get("/healthz");
    assert_eq!(code, 200, "{body}");
}

/// Issue 18, handshake: what OpenClaw 2026.9.6's gateway does, frame for frame (see
/// docs/openclaw-compatibility.md, "Handshake", for the deliberate differences).
#[test]
fn the_handshake_matches_openclaw_2026_9_6() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    demo(&store, 1, 2, 2);
    let gateway = Gateway::start(dir.path(), &store, &["--token", TOKEN, "--tick-interval", "2s"], &[]);
    let origin = gateway.base.clone();

    // The challenge lists the optional features the server offers (none here).
    let mut ws = Ws::open(&gateway, "/ws");
    let challenge = ws.challenge();
    assert_eq!(challenge["capabilities"], json!([]), "{challenge}");
    // No credentials and no device: OpenClaw's NOT_PAIRED / DEVICE_IDENTITY_REQUIRED.
    ws.send(&json!({"type": "req", "id": "c1", "method": "connect", "params": connect_params(None)}));
    let res = ws.json();
    assert_eq!(
        (res["error"]["code"].as_str(), res["error"]["details"]["code"].as_str()),
        (Some("NOT_PAIRED"), Some("DEVICE_IDENTITY_REQUIRED")),
        "{res}"
    );
    assert_eq!(ws.expect_close(), (1008, "device identity required".to_owned()));

    // A close frame before connect is answered with its own code and reason.
    let mut ws = Ws::open(&gateway, "/ws");
    ws.challenge();
    let bye = tungstenite::protocol::CloseFrame { code: 1000.into(), reason: "bye".into() };
    ws.socket.close(Some(bye)).expect("close");
    match ws.socket.read() {
        Ok(Message::Close(Some(frame))) => {
            assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1000, "bye"))
        }
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("close not answered: {other:?}"),
    }

    // A connect in a binary frame is read as text, as OpenClaw does; hello-ok names the build
    // and this boot, and the auth method.
    let mut ws = Ws::open(&gateway, "/ws");
    ws.challenge();
    let connect =
        json!({"type": "req", "id": "c1", "method": "connect", "params": connect_params(Some(TOKEN))});
    ws.socket.send(Message::binary(connect.to_string().into_bytes())).expect("send");
    let hello = ws.json();
    assert_eq!(hello["ok"], true, "{hello}");
    let server = &hello["payload"]["server"];
    assert!(server["buildId"].as_str().is_some_and(|b| b.starts_with("clawgate-")), "{server}");
    assert_eq!(server["bootId"].as_str().map(str::len), Some(36), "{server}");
    assert_eq!(hello["payload"]["auth"]["method"], "token");
    assert_eq!(hello["payload"]["policy"]["maxPayload"], 256 << 10);
    let connected_at = Instant::now();
    // Ticks come on one gateway-wide beat: a second client connected 700 ms later gets its first
    // tick at the same moment, within one interval of connecting (not a full interval after).
    std::thread::sleep(Duration::from_millis(700));
    let (mut late, _) = Ws::connect(&gateway, "/ws", Some(TOKEN));
    let first = ws.event("tick", Duration::from_secs(5));
    let first_late = late.event("tick", Duration::from_secs(5));
    assert!(
        connected_at.elapsed() < Duration::from_millis(2600),
        "first tick after {:?}",
        connected_at.elapsed()
    );
    let (a, b) = (first["payload"]["ts"].as_i64().unwrap(), first_late["payload"]["ts"].as_i64().unwrap());
    assert!((a - b).abs() < 300, "ticks at {a} and {b}: not one beat");

    // OpenClaw's Control UI connect, fields as 2026.9.6 sends them, from the gateway's own origin.
    let control_ui = json!({"minProtocol": 4, "maxProtocol": 4,
        "client": {"id": "openclaw-control-ui", "version": "2026.9.6",
            "buildId": "2026.9.6-release-eb377ac59e6c-2026-09-23T16-33-12.144Z", "platform": "Linux x86_64",
            "mode": "webchat", "instanceId": "6f1c1d0e-2f55-4a0e-8c8b-b1b7a0f9c001", "timeZone": "UTC"},
        "role": "operator", "scopes": ["operator.admin", "operator.read", "operator.write"],
        "caps": ["tool-events"], "auth": {"token": TOKEN}, "locale": "en-US", "userAgent": "Mozilla/5.0"});
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(ws_url(&gateway, "/ws")).unwrap();
    request.headers_mut().insert("origin", origin.parse().unwrap());
    let mut ui = Ws::wrap(tungstenite::connect(request).expect("upgrade").0);
    ui.challenge();
    ui.send(&json!({"type": "req", "id": "u1", "method": "connect", "params": control_ui}));
    assert_eq!(ui.json()["ok"], true);
    // The same client without an Origin: refused as OpenClaw refuses it.
    let mut bare = Ws::open(&gateway, "/ws");
    bare.challenge();
    bare.send(&json!({"type": "req", "id": "u1", "method": "connect", "params": control_ui}));
    let res = bare.json();
    assert_eq!(res["error"]["details"]["code"], "CONTROL_UI_ORIGIN_NOT_ALLOWED", "{res}");
    assert_eq!(res["error"]["details"]["reason"], "origin missing or invalid", "{res}");
    assert_eq!(bare.expect_close().0, 1008);
}
