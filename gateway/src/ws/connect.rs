//! The `connect` request: its params parsed by serde with OpenClaw 2026.9.6's schema
//! (`ConnectParamsSchema`: closed objects, so unknown properties are refused as OpenClaw does),
//! then checked in OpenClaw's order: protocol range, role, browser origin, credentials, device
//! identity. The answer is `hello-ok` or an error with OpenClaw's codes and close code.
//!
//! Where clawgate deliberately differs (no pairing store, so no device tokens or pairing;
//! loopback clients may omit a device identity; the scopes a client asks for are granted) is
//! listed in docs/openclaw-compatibility.md, "Handshake".

use std::collections::HashMap;

use serde::{Deserialize, de::IgnoredAny};
use serde_json::{Value, json};

use super::{CLOSE_POLICY, CLOSE_PROTOCOL, EVENTS, PROTOCOL_VERSION};
use crate::{AppState, api, auth::scope, device, error::ApiError};

/// OpenClaw's `client.id` and `client.mode` enums (`client-info.ts`, 2026.9.6).
pub const CLIENT_IDS: [&str; 17] = [
    "webchat-ui",
    "openclaw-control-ui",
    "openclaw-browser-copilot",
    "openclaw-tui",
    "webchat",
    "cli",
    "gateway-client",
    "openclaw-macos",
    "openclaw-linux",
    "openclaw-ios",
    "openclaw-watchos",
    "openclaw-android",
    "node-host",
    "openclaw-worker",
    "test",
    "fingerprint",
    "openclaw-probe",
];
pub const CLIENT_MODES: [&str; 8] = ["webchat", "cli", "ui", "backend", "node", "worker", "probe", "test"];

/// A request frame (OpenClaw's closed `RequestFrameSchema`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestFrame {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub method: String,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub traceparent: Option<String>,
    #[serde(default)]
    pub expected_profile_id: Option<IgnoredAny>,
}

/// `connect` params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectParams {
    pub min_protocol: u64,
    pub max_protocol: u64,
    pub client: ClientInfo,
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    #[serde(default)]
    pub commands: Option<Vec<String>>,
    /// Computer Use declaration; OpenClaw validates it elsewhere, clawgate has no use for it.
    #[serde(default)]
    pub computer_use: Option<IgnoredAny>,
    /// The deprecated v1 node-host worker envelope.
    #[serde(default)]
    pub worker_runs: Option<IgnoredAny>,
    #[serde(default)]
    pub permissions: Option<HashMap<String, bool>>,
    #[serde(default)]
    pub path_env: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The model catalog the Control UI asks for when the challenge advertises it (clawgate
    /// does not).
    #[serde(default)]
    pub model_catalog: Option<IgnoredAny>,
    #[serde(default)]
    pub device: Option<DeviceParams>,
    #[serde(default)]
    pub auth: Option<AuthParams>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientInfo {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub version: String,
    /// The client's build (1..96 chars), e.g. `2026.9.6-release-eb377ac59e6c-…`.
    #[serde(default)]
    pub build_id: Option<String>,
    pub platform: String,
    #[serde(default)]
    pub device_family: Option<String>,
    #[serde(default)]
    pub model_identifier: Option<String>,
    /// The client's IANA zone (1..64 chars).
    #[serde(default)]
    pub time_zone: Option<String>,
    pub mode: String,
    #[serde(default)]
    pub instance_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceParams {
    pub id: String,
    pub public_key: String,
    pub signature: String,
    pub signed_at: i64,
    pub nonce: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthParams {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub bootstrap_token: Option<String>,
    #[serde(default)]
    pub device_token: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub approval_runtime_token: Option<String>,
    #[serde(default)]
    pub agent_runtime_identity_token: Option<String>,
}

/// A serde error with its path, worded as OpenClaw words its schema errors
/// (`at /client: unexpected property 'x'`, `must have required property 'y'`).
pub fn schema_message(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let segments: Vec<String> = error
        .path()
        .iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => Some(key.clone()),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect();
    let at = |segments: &[String]| {
        if segments.is_empty() { "at root".to_owned() } else { format!("at /{}", segments.join("/")) }
    };
    let inner = error.inner().to_string();
    let inner = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
    if let Some(name) = inner.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
        let parent = match segments.last() {
            Some(last) if last == name => &segments[..segments.len() - 1],
            _ => &segments[..],
        };
        return format!("{}: unexpected property '{}'", at(parent), crate::params::shown(name));
    }
    if let Some(name) = inner.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        return format!("{}: must have required property '{name}'", at(&segments));
    }
    format!("{}: {inner}", at(&segments))
}

/// Schema rules serde's derive does not express: enums, non-empty and bounded strings, minimums.
fn check_schema(p: &ConnectParams) -> Result<(), String> {
    let non_empty = |at: &str, value: Option<&str>| match value {
        Some("") => Err(format!("at {at}: must NOT have fewer than 1 characters")),
        _ => Ok(()),
    };
    let bounded = |at: &str, value: Option<&str>, max: usize| match value {
        Some("") => Err(format!("at {at}: must NOT have fewer than 1 characters")),
        Some(v) if v.chars().count() > max => {
            Err(format!("at {at}: must NOT have more than {max} characters"))
        }
        _ => Ok(()),
    };
    for (at, value) in [("/minProtocol", p.min_protocol), ("/maxProtocol", p.max_protocol)] {
        if value < 1 {
            return Err(format!("at {at}: must be >= 1"));
        }
    }
    let c = &p.client;
    if !CLIENT_IDS.contains(&c.id.as_str()) {
        return Err("at /client/id: must be equal to one of the allowed values".into());
    }
    if !CLIENT_MODES.contains(&c.mode.as_str()) {
        return Err("at /client/mode: must be equal to one of the allowed values".into());
    }
    non_empty("/client/displayName", c.display_name.as_deref())?;
    non_empty("/client/version", Some(&c.version))?;
    non_empty("/client/platform", Some(&c.platform))?;
    non_empty("/client/deviceFamily", c.device_family.as_deref())?;
    non_empty("/client/modelIdentifier", c.model_identifier.as_deref())?;
    non_empty("/client/instanceId", c.instance_id.as_deref())?;
    bounded("/client/buildId", c.build_id.as_deref(), 96)?;
    bounded("/client/timeZone", c.time_zone.as_deref(), 64)?;
    for (name, list) in [("caps", &p.caps), ("commands", &p.commands), ("scopes", &p.scopes)] {
        if let Some(i) = list.iter().flatten().position(String::is_empty) {
            return Err(format!("at /{name}/{i}: must NOT have fewer than 1 characters"));
        }
    }
    if p.permissions.iter().flatten().any(|(k, _)| k.is_empty()) {
        return Err("at /permissions: property name must NOT have fewer than 1 characters".into());
    }
    non_empty("/role", p.role.as_deref())?;
    if let Some(d) = &p.device {
        for (at, v) in [
            ("/device/id", &d.id),
            ("/device/publicKey", &d.public_key),
            ("/device/signature", &d.signature),
            ("/device/nonce", &d.nonce),
        ] {
            non_empty(at, Some(v))?;
        }
        if d.signed_at < 0 {
            return Err("at /device/signedAt: must be >= 0".into());
        }
    }
    Ok(())
}

/// Parses `connect` params (serde + the schema rules): OpenClaw's "invalid connect params" text.
pub fn parse_params(params: &Value) -> Result<ConnectParams, String> {
    let parsed: ConnectParams = serde_path_to_error::deserialize(params).map_err(|e| schema_message(&e))?;
    check_schema(&parsed)?;
    Ok(parsed)
}

/// Why a `connect` was refused: the error for the `res` frame and how to close.
#[derive(Debug, Clone)]
pub struct HandshakeError {
    pub error: Value,
    pub close_code: u16,
    pub close_reason: String,
    /// Counts against the failed-auth limit.
    pub auth_failure: bool,
}

/// OpenClaw truncates close reasons to what a close frame holds (123 bytes).
pub fn close_reason(text: &str) -> String {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl HandshakeError {
    fn refuse(code: &str, message: &str, details: Option<Value>, close_code: u16) -> HandshakeError {
        let mut error = json!({"code": code, "message": message});
        if let Some(details) = details {
            error["details"] = details;
        }
        HandshakeError { error, close_code, close_reason: close_reason(message), auth_failure: false }
    }

    pub fn invalid_params(detail: &str) -> HandshakeError {
        HandshakeError::refuse(
            "INVALID_REQUEST",
            &format!("invalid connect params: {detail}"),
            None,
            CLOSE_POLICY,
        )
    }

    fn unauthorized(message: &str, code: &str, reason: &str, next_step: &str) -> HandshakeError {
        let details = json!({
            "code": code,
            "authReason": reason,
            "canRetryWithDeviceToken": false,
            "recommendedNextStep": next_step,
        });
        HandshakeError {
            auth_failure: true,
            ..HandshakeError::refuse("INVALID_REQUEST", message, Some(details), CLOSE_POLICY)
        }
    }

    fn device_required() -> HandshakeError {
        let details = json!({"code": "DEVICE_IDENTITY_REQUIRED"});
        HandshakeError::refuse("NOT_PAIRED", "device identity required", Some(details), CLOSE_POLICY)
    }
}

/// What the upgrade request said about the page a browser client runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginCheck {
    /// No `Origin`: not a browser.
    Absent,
    Allowed,
    Refused,
}

/// What the server knows when checking `connect`.
#[derive(Debug, Clone)]
pub struct ConnectContext<'a> {
    pub nonce: &'a str,
    /// The configured token (also accepted as a password); `None`: auth mode none.
    pub token: Option<&'a str>,
    pub peer_loopback: bool,
    pub origin: OriginCheck,
    pub now_ms: i64,
}

/// Who is connected, after a successful `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub client_id: String,
    pub client_mode: String,
    pub client_version: String,
    pub client_build: Option<String>,
    pub role: String,
    pub scopes: Vec<String>,
    pub device_id: Option<String>,
    /// `token`, `password` or `none` (`hello-ok.auth.method`).
    pub auth_method: &'static str,
}

impl Session {
    /// OpenClaw's per-method authorisation (`auth::scope`).
    pub fn authorize(&self, method: &str) -> Result<(), ApiError> {
        scope::authorize(&self.role, &self.scopes, api::required_scope(method))
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.is_empty())
}

/// Validates `connect` params and authenticates; the pure part of the handshake.
pub fn check_connect(params: &Value, ctx: &ConnectContext<'_>) -> Result<Session, HandshakeError> {
    let p = parse_params(params).map_err(|detail| HandshakeError::invalid_params(&detail))?;
    let (min, max) = (p.min_protocol, p.max_protocol);
    if !(min <= PROTOCOL_VERSION && PROTOCOL_VERSION <= max) {
        let details = json!({
            "code": "PROTOCOL_MISMATCH",
            "clientMinProtocol": min,
            "clientMaxProtocol": max,
            "expectedProtocol": PROTOCOL_VERSION,
        });
        return Err(HandshakeError::refuse(
            "INVALID_REQUEST",
            "protocol mismatch",
            Some(details),
            CLOSE_PROTOCOL,
        ));
    }
    let role = p.role.as_deref().unwrap_or("operator");
    if !matches!(role, "operator" | "node") {
        return Err(HandshakeError::refuse("INVALID_REQUEST", "invalid role", None, CLOSE_POLICY));
    }
    // OpenClaw checks the origin of any client that sent one, and of browser UIs always.
    let client = &p.client;
    let browser_ui =
        matches!(client.id.as_str(), "openclaw-control-ui" | "openclaw-browser-copilot" | "webchat-ui")
            || client.mode == "webchat";
    let origin_refusal = match ctx.origin {
        OriginCheck::Refused => Some("origin not allowed"),
        OriginCheck::Absent if browser_ui => Some("origin missing or invalid"),
        _ => None,
    };
    if let Some(reason) = origin_refusal {
        let message = "origin not allowed (open the Control UI from the gateway host or allow its name with --allowed-host)";
        let details = json!({"code": "CONTROL_UI_ORIGIN_NOT_ALLOWED", "reason": reason});
        return Err(HandshakeError::refuse("INVALID_REQUEST", message, Some(details), CLOSE_POLICY));
    }

    // OpenClaw's hints (`formatGatewayAuthFailureMessage`), for the clients clawgate sees.
    let ui = browser_ui || client.id == "openclaw-tui";
    let hint = |what: &str| {
        if ui {
            format!("open the dashboard URL and paste the {what} in Control UI settings")
        } else {
            format!("provide gateway auth {what}")
        }
    };
    let auth = p.auth.unwrap_or_default();
    let (token, password) = (non_empty(&auth.token), non_empty(&auth.password));
    let mut auth_method = "none";
    if let Some(expected) = ctx.token {
        match (token, password) {
            (Some(given), _) | (None, Some(given)) => {
                let what = if token.is_some() { "token" } else { "password" };
                if !crate::auth::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
                    let (code, reason) = if what == "token" {
                        ("AUTH_TOKEN_MISMATCH", "token_mismatch")
                    } else {
                        ("AUTH_PASSWORD_MISMATCH", "password_mismatch")
                    };
                    let message = format!("unauthorized: gateway {what} mismatch ({})", hint(what));
                    return Err(HandshakeError::unauthorized(
                        &message,
                        code,
                        reason,
                        "update_auth_credentials",
                    ));
                }
                auth_method = what;
            }
            // No shared secret and no device: OpenClaw's "device identity required".
            (None, None) if p.device.is_none() => return Err(HandshakeError::device_required()),
            (None, None) => {}
        }
    }

    let scopes = p.scopes.unwrap_or_default();
    let device_id = match &p.device {
        Some(d) => {
            let claim = device::DeviceClaim {
                id: &d.id,
                public_key: &d.public_key,
                signature: &d.signature,
                signed_at_ms: d.signed_at,
                nonce: Some(&d.nonce),
            };
            let signed = device::SignedContext {
                challenge_nonce: ctx.nonce,
                client_id: &client.id,
                client_mode: &client.mode,
                role,
                scopes: &scopes,
                token: token
                    .or(non_empty(&auth.device_token))
                    .or(non_empty(&auth.bootstrap_token))
                    .unwrap_or(""),
                platform: &client.platform,
                device_family: client.device_family.as_deref().unwrap_or(""),
            };
            match device::verify(&claim, &signed, ctx.now_ms) {
                Ok(verified) => Some(verified.id),
                Err(e) => {
                    let details = json!({"code": e.code(), "reason": e.reason()});
                    return Err(HandshakeError {
                        auth_failure: true,
                        ..HandshakeError::refuse(
                            "INVALID_REQUEST",
                            &e.to_string(),
                            Some(details),
                            CLOSE_POLICY,
                        )
                    });
                }
            }
        }
        // clawgate has no pairing store: a device is what proves a remote client, loopback
        // clients may go without one.
        None if ctx.peer_loopback => None,
        None => return Err(HandshakeError::device_required()),
    };
    if ctx.token.is_some() && auth_method == "none" {
        // A verified device alone is not enough: nothing pairs it.
        return Err(HandshakeError::unauthorized(
            &format!("unauthorized: gateway token missing ({})", hint("token")),
            "AUTH_TOKEN_MISSING",
            "token_missing",
            "update_auth_configuration",
        ));
    }
    Ok(Session {
        client_id: p.client.id,
        client_mode: p.client.mode,
        client_version: p.client.version,
        client_build: p.client.build_id,
        role: role.to_owned(),
        scopes,
        device_id,
        auth_method,
    })
}

/// `hello-ok.server.buildId`: this build (OpenClaw sends its release build id).
pub const BUILD_ID: &str = concat!("clawgate-", env!("CARGO_PKG_VERSION"));

/// The `hello-ok` payload.
pub fn hello_ok(state: &AppState, session: &Session, conn_id: &str) -> Value {
    let limits = &state.ws.limits;
    json!({
        "type": "hello-ok",
        "protocol": PROTOCOL_VERSION,
        "server": {
            "version": env!("CARGO_PKG_VERSION"),
            "buildId": BUILD_ID,
            "bootId": state.ws.boot_id,
            // clawgate serves no OpenClaw Control UI build of its own: "configured" tells a
            // Control UI not to compare its build with ours (else it asks for a refresh).
            "controlUiBuildSource": "configured",
            "connId": conn_id,
        },
        "features": {"methods": api::METHODS, "events": EVENTS},
        "snapshot": {
            "presence": [],
            "health": api::health_json(state),
            "stateVersion": {"presence": 0, "health": 0},
            "uptimeMs": state.uptime_ms(),
            "stateDir": state.config.state_dir,
            "sessionDefaults": {"defaultAgentId": "main", "mainKey": "main", "mainSessionKey": "agent:main:main"},
            "authMode": if state.config.token.is_some() { "token" } else { "none" },
        },
        "auth": {"method": session.auth_method, "role": session.role, "scopes": session.scopes},
        "policy": {
            "maxPayload": limits.max_payload,
            "maxBufferedBytes": limits.max_buffered_bytes,
            "tickIntervalMs": limits.tick_interval.as_millis() as u64,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn params() -> Value {
        json!({
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "gateway-client", "version": "1.0", "platform": "linux", "mode": "backend"},
            "role": "operator", "scopes": ["operator.read"], "caps": [], "commands": [], "permissions": {},
            "auth": {"token": "s3cret"}, "locale": "en-US", "userAgent": "test"
        })
    }

    fn ctx(token: Option<&str>, loopback: bool) -> ConnectContext<'_> {
        ConnectContext {
            nonce: "n-1",
            token,
            peer_loopback: loopback,
            origin: OriginCheck::Absent,
            now_ms: 1_795_000_000_000,
        }
    }

    fn refused(params: &Value, ctx: &ConnectContext<'_>) -> HandshakeError {
        check_connect(params, ctx).expect_err("must be refused")
    }

    #[test]
    fn a_loopback_client_with_the_token_connects() {
        let session = check_connect(&params(), &ctx(Some("s3cret"), true)).unwrap();
        assert_eq!(session.scopes, vec!["operator.read"]);
        assert_eq!((session.device_id, session.auth_method), (None, "token"));
        // Password auth carries the same secret.
        let mut p = params();
        p["auth"] = json!({"password": "s3cret"});
        assert_eq!(check_connect(&p, &ctx(Some("s3cret"), true)).unwrap().auth_method, "password");
    }

    #[test]
    fn the_control_uis_2026_9_6_connect_is_accepted() {
        // As OpenClaw 2026.9.6's Control UI sends it (docs/openclaw-compatibility.md), signature
        // cut: no device here.
        let p = json!({"minProtocol":4,"maxProtocol":4,
            "client":{"id":"openclaw-control-ui","version":"2026.9.6",
                "buildId":"2026.9.6-release-eb377ac59e6c-2026-09-23T16-33-12.144Z","platform":"Linux x86_64",
                "mode":"webchat","instanceId":"0b8f1a4e-9a53-4c41-9a4e-8f0f4c2b7e11","timeZone":"UTC"},
            "role":"operator",
            "scopes":["operator.admin","operator.read","operator.write","operator.approvals","operator.questions","operator.pairing"],
            "caps":["tool-events"],"auth":{"token":"s3cret"},"locale":"en-US","userAgent":"Mozilla/5.0"});
        let ctx = ConnectContext { origin: OriginCheck::Allowed, ..ctx(Some("s3cret"), true) };
        let session = check_connect(&p, &ctx).unwrap();
        assert_eq!(
            session.client_build.as_deref(),
            Some("2026.9.6-release-eb377ac59e6c-2026-09-23T16-33-12.144Z")
        );
        // The same client without an Origin is refused as OpenClaw refuses it.
        let e = refused(&p, &ConnectContext { origin: OriginCheck::Absent, ..ctx.clone() });
        assert_eq!(e.error["details"]["code"], "CONTROL_UI_ORIGIN_NOT_ALLOWED");
        assert_eq!(e.close_code, CLOSE_POLICY);
        let e = refused(&params(), &ConnectContext { origin: OriginCheck::Refused, ..ctx });
        assert_eq!(e.error["details"]["reason"], "origin not allowed");
    }

    #[test]
    fn protocol_mismatch_closes_1002_with_details() {
        let mut p = params();
        p["minProtocol"] = json!(1);
        p["maxProtocol"] = json!(3);
        let e = refused(&p, &ctx(Some("s3cret"), true));
        assert_eq!(e.close_code, CLOSE_PROTOCOL);
        assert_eq!(e.error["message"], "protocol mismatch");
        assert_eq!(e.error["details"]["expectedProtocol"], 4);
        assert_eq!(e.error["details"]["clientMaxProtocol"], 3);
        p["maxProtocol"] = json!(99);
        assert!(check_connect(&p, &ctx(Some("s3cret"), true)).is_ok());
        p["role"] = json!("admin");
        assert_eq!(refused(&p, &ctx(Some("s3cret"), true)).error["message"], "invalid role");
    }

    #[test]
    fn credentials_and_device_identity_get_openclaws_codes() {
        let mut p = params();
        p["auth"] = json!({"token": "nope"});
        let e = refused(&p, &ctx(Some("s3cret"), true));
        assert_eq!((e.close_code, e.auth_failure), (CLOSE_POLICY, true));
        assert_eq!(e.error["code"], "INVALID_REQUEST");
        assert_eq!(e.error["details"]["code"], "AUTH_TOKEN_MISMATCH");
        p["auth"] = json!({"password": "nope"});
        assert_eq!(
            refused(&p, &ctx(Some("s3cret"), true)).error["details"]["code"],
            "AUTH_PASSWORD_MISMATCH"
        );
        // Nothing at all: OpenClaw's NOT_PAIRED / DEVICE_IDENTITY_REQUIRED, not an auth failure.
        p["auth"] = json!({});
        let e = refused(&p, &ctx(Some("s3cret"), true));
        assert_eq!((e.error["code"].as_str(), e.auth_failure), (Some("NOT_PAIRED"), false));
        assert_eq!(e.error["details"]["code"], "DEVICE_IDENTITY_REQUIRED");
        // Auth mode none accepts anything from loopback.
        assert_eq!(check_connect(&p, &ctx(None, true)).unwrap().auth_method, "none");
    }

    #[test]
    fn params_are_validated_with_openclaw_worded_messages() {
        let cases: [(&str, Value, &str); 8] = [
            ("/extra", json!(1), "at root: unexpected property 'extra'"),
            ("/client/extra", json!(1), "at /client: unexpected property 'extra'"),
            ("/client/id", json!("martian"), "at /client/id: must be equal to one of the allowed values"),
            ("/client/version", json!(""), "at /client/version: must NOT have fewer than 1 characters"),
            ("/client/buildId", json!("b".repeat(97)), "at /client/buildId: must NOT have more than 96"),
            ("/maxProtocol", json!("4"), "at /maxProtocol: invalid type"),
            ("/scopes", json!("operator.read"), "at /scopes: invalid type"),
            ("/auth/extra", json!("x"), "at /auth: unexpected property 'extra'"),
        ];
        for (pointer, value, needle) in cases {
            let mut p = params();
            let (parent, name) = pointer.rsplit_once('/').unwrap();
            let target = if parent.is_empty() { &mut p } else { p.pointer_mut(parent).unwrap() };
            target[name] = value;
            let e = refused(&p, &ctx(Some("s3cret"), true));
            let message = e.error["message"].as_str().unwrap();
            assert!(message.starts_with("invalid connect params: "), "{message}");
            assert!(message.contains(needle), "{pointer}: {message}");
            assert_eq!(e.close_code, CLOSE_POLICY);
        }
        let mut p = params();
        p["client"].as_object_mut().unwrap().remove("version");
        let e = refused(&p, &ctx(Some("s3cret"), true));
        assert_eq!(
            e.error["message"],
            "invalid connect params: at /client: must have required property 'version'"
        );
    }

    #[test]
    fn remote_clients_need_a_verified_device() {
        let e = refused(&params(), &ctx(Some("s3cret"), false));
        assert_eq!(e.error["details"]["code"], "DEVICE_IDENTITY_REQUIRED");

        let signing = SigningKey::from_bytes(&[9u8; 32]);
        let id = device::device_id(signing.verifying_key().as_bytes());
        let scopes = vec!["operator.read".to_owned()];
        let signed_ctx = device::SignedContext {
            challenge_nonce: "n-1",
            client_id: "gateway-client",
            client_mode: "backend",
            role: "operator",
            scopes: &scopes,
            token: "s3cret",
            platform: "linux",
            device_family: "",
        };
        let now = 1_795_000_000_000i64;
        let payload = device::payload_v3(&id, &signed_ctx, now, "n-1", "linux", "");
        let mut p = params();
        p["device"] = json!({
            "id": id, "publicKey": device::base64url(signing.verifying_key().as_bytes()),
            "signature": device::base64url(&signing.sign(payload.as_bytes()).to_bytes()),
            "signedAt": now, "nonce": "n-1",
        });
        let session = check_connect(&p, &ctx(Some("s3cret"), false)).unwrap();
        assert_eq!(session.device_id.as_deref(), Some(id.as_str()));
        // The same signature on another connection's challenge is refused.
        let e = refused(&p, &ConnectContext { nonce: "n-2", ..ctx(Some("s3cret"), false) });
        assert_eq!(e.error["details"]["code"], "DEVICE_AUTH_NONCE_MISMATCH");
        assert!(e.auth_failure);
        // A verified device without the token: the token is still missing.
        let mut p2 = p.clone();
        p2["auth"] = json!({});
        assert_eq!(
            refused(&p2, &ctx(Some("s3cret"), false)).error["details"]["code"],
            "DEVICE_AUTH_SIGNATURE_INVALID"
        );
    }

    #[test]
    fn scopes_are_granted_as_asked_and_checked_per_method() {
        let mut p = params();
        p["scopes"] = json!([]);
        let session = check_connect(&p, &ctx(None, true)).unwrap();
        assert!(session.scopes.is_empty(), "no default scope");
        assert_eq!(session.authorize("usage.cost").unwrap_err().message, "missing scope: operator.read");
        assert!(session.authorize("health").is_ok());
        let mut node = session.clone();
        node.role = "node".into();
        assert!(node.authorize("sessions.usage").is_err());
    }
}
