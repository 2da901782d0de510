//! Property tests of every gateway parser that takes untrusted input: HTTP and WebSocket method
//! params into a `UsageQuery`, WebSocket request frames, `connect` params, `Host`/`Origin`
//! values, device identity claims, and the bytes shield mode's relay frames. Each must answer any input with a value or a clear error,
//! never a panic; and every query the params parser accepts must fit far below the IPC request
//! frame limit (the request-size contract).
//!
//! CI runs proptest's default 256 cases per property. A long run (docs/ops/security.md):
//! `PROPTEST_CASES=200000 cargo test --release -p gateway --test fuzz`.

use gateway::{
    auth::host::HostPolicy,
    device, limits, params,
    ws::connect::{self, ConnectContext, OriginCheck, RequestFrame},
};
use ipc_proto::{Method, ToWorker};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Names the parsers know, plus noise, so that generated objects reach past the
/// "unexpected property" check.
const KNOWN_KEYS: [&str; 24] = [
    "key",
    "agentId",
    "agentScope",
    "creatorKey",
    "startDate",
    "endDate",
    "mode",
    "range",
    "groupBy",
    "includeHistorical",
    "utcOffset",
    "timeZone",
    "limit",
    "includeContextWeight",
    "days",
    "type",
    "id",
    "method",
    "params",
    "client",
    "minProtocol",
    "maxProtocol",
    "scopes",
    "auth",
];

/// Strings that look like what the parsers expect, and plenty that do not.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("all".to_owned()),
        Just("2026-11-01".to_owned()),
        Just("2026-02-30".to_owned()),
        Just("UTC+5:30".to_owned()),
        Just("UTC-99:99".to_owned()),
        Just("Europe/Berlin".to_owned()),
        Just("specific".to_owned()),
        Just("agent:main:main".to_owned()),
        Just("7d".to_owned()),
        Just("family".to_owned()),
        "[a-zA-Z0-9:+\\-/_. ]{0,24}",
        ".{0,40}",
        // Around the string-param limit.
        (500usize..530).prop_map(|n| "k".repeat(n)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (0u64..10).prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => prop::sample::select(KNOWN_KEYS.to_vec()).prop_map(str::to_owned), 1 => text()]
}

/// An object of known keys with arbitrary values: what method params look like.
fn params_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), json_value()), 0..8)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

const METHODS: [Method; 4] =
    [Method::SessionsUsage, Method::UsageCost, Method::SessionsUsageTimeseries, Method::SessionsUsageLogs];

proptest! {
    /// Params -> query: a value or a clear error; an accepted query is a few KiB on the wire.
    #[test]
    fn method_params_never_panic_and_fit_the_ipc_contract(
        method in prop::sample::select(METHODS.to_vec()),
        params in prop_oneof![params_object(), json_value()],
        now_ms in 0i64..4_102_444_800_000,
    ) {
        let now = jiff::Timestamp::from_millisecond(now_ms).unwrap();
        match params::parse(method, &params, now) {
            Ok(query) => {
                let frame = ipc_proto::frame::encode(&ToWorker::Request { id: u64::MAX, query: query.clone(), known: Some(u64::MAX) }).unwrap();
                prop_assert!(frame.len() < 8 << 10, "{} bytes for {query:?}", frame.len());
                prop_assert!(query.key.as_ref().is_none_or(|k| k.len() <= limits::MAX_STRING_PARAM_BYTES));
                prop_assert!(query.start_ms <= query.end_ms);
            }
            Err(error) => {
                prop_assert!(!error.message.is_empty());
                // Error text never echoes more than a short piece of client input.
                prop_assert!(error.message.len() < 400, "{}", error.message);
            }
        }
    }

    /// WebSocket request frames: any JSON is a frame or a worded error.
    #[test]
    fn request_frames_never_panic(value in json_value()) {
        if let Err(error) = serde_path_to_error::deserialize::<_, RequestFrame>(&value) {
            prop_assert!(!connect::schema_message(&error).is_empty());
        }
    }

    /// `connect` params: any JSON, and connect-shaped JSON with arbitrary fields, is a session
    /// or a refusal with a close code.
    #[test]
    fn connect_params_never_panic(
        value in prop_oneof![json_value(), connect_like()],
        token in prop::option::of(Just("s3cret")),
        loopback: bool,
        origin in prop::sample::select(vec![OriginCheck::Absent, OriginCheck::Allowed, OriginCheck::Refused]),
    ) {
        let ctx = ConnectContext { nonce: "n-1", token, peer_loopback: loopback, origin, now_ms: 1_795_000_000_000 };
        match connect::check_connect(&value, &ctx) {
            Ok(session) => prop_assert!(session.role == "operator" || session.role == "node"),
            Err(refused) => {
                prop_assert!([1002u16, 1008].contains(&refused.close_code));
                prop_assert!(refused.close_reason.len() <= 123);
            }
        }
    }

    /// Host and Origin headers: any text is allowed or not, never a panic.
    #[test]
    fn hosts_and_origins_never_panic(host in ".{0,40}", origin in ".{0,60}", loopback: bool) {
        let policy = HostPolicy::new(18790, &["dash.example".into()]).unwrap();
        let _ = policy.host_allowed(&host);
        let _ = policy.origin_allowed(&origin, Some(&host), loopback);
        let _ = HostPolicy::new(1, &[host]);
    }

    /// Device identity claims: any strings are verified or refused.
    #[test]
    fn device_claims_never_panic(id in ".{0,70}", key in ".{0,90}", signature in ".{0,100}", signed_at: i64) {
        let scopes = vec!["operator.read".to_owned()];
        let claim = device::DeviceClaim { id: &id, public_key: &key, signature: &signature, signed_at_ms: signed_at, nonce: Some("n-1") };
        let ctx = device::SignedContext {
            challenge_nonce: "n-1", client_id: "test", client_mode: "test", role: "operator",
            scopes: &scopes, token: "", platform: "linux", device_family: "",
        };
        prop_assert!(device::verify(&claim, &ctx, 1_795_000_000_000).is_err());
    }
}

/// A valid `connect` with one field replaced by arbitrary JSON (or removed).
fn connect_like() -> impl Strategy<Value = Value> {
    let pointers = vec![
        "/minProtocol",
        "/maxProtocol",
        "/client",
        "/client/id",
        "/client/version",
        "/client/mode",
        "/client/platform",
        "/client/buildId",
        "/client/timeZone",
        "/role",
        "/scopes",
        "/caps",
        "/permissions",
        "/auth",
        "/auth/token",
        "/device",
        "/locale",
    ];
    (prop::sample::select(pointers), prop::option::of(json_value())).prop_map(|(pointer, value)| {
        let mut p = json!({
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "test", "version": "1", "platform": "linux", "mode": "test"},
            "role": "operator", "scopes": ["operator.read"], "caps": [], "permissions": {},
            "auth": {"token": "s3cret"}, "locale": "en",
        });
        let (parent, name) = pointer.rsplit_once('/').unwrap();
        let target = if parent.is_empty() { Some(&mut p) } else { p.pointer_mut(parent) };
        if let Some(Value::Object(obj)) = target {
            match value {
                Some(v) => drop(obj.insert(name.to_owned(), v)),
                None => drop(obj.remove(name)),
            }
        }
        p
    })
}

/// One frame as written: opcode, FIN, payload (unmasked), mask key.
type PlainFrame = (u8, bool, Vec<u8>, Option<[u8; 4]>);

/// A frame of any opcode the relay forwards, masked or not, with a payload of up to 300 bytes
/// (lengths on both sides of the 7-bit and 16-bit encodings are reached by `long`).
fn relay_frames() -> impl Strategy<Value = Vec<PlainFrame>> {
    use gateway::relay::frame::{BINARY, CONTINUATION, PING, PONG, TEXT};
    let frame = (
        prop::sample::select(vec![TEXT, BINARY, PING, PONG]),
        prop::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
        prop::option::of(any::<[u8; 4]>()),
        0..3usize,
    );
    prop::collection::vec(frame, 0..12).prop_map(|frames| {
        let mut out = Vec::new();
        for (opcode, mut payload, long, mask, fragments) in frames {
            if opcode & 0x8 != 0 {
                payload.truncate(125);
                out.push((opcode, true, payload, mask));
                continue;
            }
            if long {
                payload = payload.repeat(250);
            }
            // A data message in `fragments + 1` frames.
            let step = payload.len() / (fragments + 1) + 1;
            let pieces: Vec<Vec<u8>> = payload.chunks(step).map(<[u8]>::to_vec).collect();
            let pieces = if pieces.is_empty() { vec![Vec::new()] } else { pieces };
            let last = pieces.len() - 1;
            for (i, piece) in pieces.into_iter().enumerate() {
                out.push((if i == 0 { opcode } else { CONTINUATION }, i == last, piece, mask));
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The relay's frame reader on any bytes: progress every call, an error or a piece, never
    /// a panic.
    #[test]
    fn relay_frame_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), cut in 1..64usize) {
        let mut reader = gateway::relay::frame::FrameReader::default();
        'feed: for chunk in bytes.chunks(cut) {
            let mut at = 0;
            while at < chunk.len() {
                match reader.read(&chunk[at..]) {
                    Ok((n, _)) => { prop_assert!(n > 0); at += n; }
                    Err(_) => break 'feed,
                }
            }
        }
    }

    /// Valid frames cut anywhere: the reader finds every header and every payload byte
    /// (unmasked with the header's key) and ends between messages.
    #[test]
    fn relay_frame_reader_follows_frames_cut_anywhere(frames in relay_frames(), cut in 1..200usize) {
        use gateway::relay::frame::{self, FrameReader, Piece};
        let mut stream = Vec::new();
        for (opcode, fin, payload, mask) in &frames {
            stream.extend(frame::encode_frame(*opcode, *fin, payload, *mask));
        }
        let mut reader = FrameReader::default();
        let mut seen: Vec<PlainFrame> = Vec::new();
        for chunk in stream.chunks(cut) {
            let mut at = 0;
            while at < chunk.len() {
                let (n, piece) = reader.read(&chunk[at..]).expect("a valid stream");
                at += n;
                match piece {
                    Piece::Partial => {}
                    Piece::Header { header, .. } => seen.push((header.opcode, header.fin, Vec::new(), header.mask)),
                    Piece::Payload { header, bytes, offset, .. } => {
                        let mut plain = bytes.to_vec();
                        if let Some(key) = header.mask {
                            frame::apply_mask(&mut plain, key, offset);
                        }
                        seen.last_mut().expect("a header first").2.extend(plain);
                    }
                }
            }
        }
        prop_assert!(reader.between_messages());
        prop_assert_eq!(seen, frames);
    }
}
