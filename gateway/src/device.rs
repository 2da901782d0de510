//! Ed25519 device identity, verified the way OpenClaw's gateway does (REFERENCE §4).
//!
//! A client may prove a device key in `connect.params.device`: `id` is the SHA-256 hex of the raw
//! 32-byte public key, keys and signatures are base64url, and the signature covers a `|`-joined
//! payload bound to the connection's challenge nonce:
//! `v2|deviceId|clientId|clientMode|role|scopes(csv)|signedAtMs|token|nonce`, or the preferred
//! `v3|…|nonce|platform|deviceFamily`. The client does not say which version it signed, so both
//! are tried (v3 first). clawgate has no pairing store: a verified device is accepted when the
//! connection's token auth also passed.

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// How far `signedAt` may be from our clock, either way.
pub const MAX_SIGNATURE_SKEW_MS: i64 = 10 * 60 * 1000;

/// SPKI DER prefix of an Ed25519 public key (the raw key follows it).
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// What the client claims in `connect.params.device`.
#[derive(Debug, Clone)]
pub struct DeviceClaim<'a> {
    pub id: &'a str,
    pub public_key: &'a str,
    pub signature: &'a str,
    pub signed_at_ms: i64,
    pub nonce: Option<&'a str>,
}

/// The connection facts the signature must cover.
#[derive(Debug, Clone)]
pub struct SignedContext<'a> {
    pub challenge_nonce: &'a str,
    pub client_id: &'a str,
    pub client_mode: &'a str,
    pub role: &'a str,
    pub scopes: &'a [String],
    /// The credential the client sent (`auth.token`, else `deviceToken`, else `bootstrapToken`), or "".
    pub token: &'a str,
    pub platform: &'a str,
    pub device_family: &'a str,
}

/// Why a device identity was refused; [`DeviceError::code`] is OpenClaw's detail code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("device public key invalid")]
    PublicKeyInvalid,
    #[error("device identity mismatch")]
    IdMismatch,
    #[error("device nonce required")]
    NonceRequired,
    #[error("device nonce mismatch")]
    NonceMismatch,
    #[error("device signature expired")]
    SignatureExpired,
    #[error("device signature invalid")]
    SignatureInvalid,
}

impl DeviceError {
    pub fn code(&self) -> &'static str {
        match self {
            DeviceError::PublicKeyInvalid => "DEVICE_AUTH_PUBLIC_KEY_INVALID",
            DeviceError::IdMismatch => "DEVICE_AUTH_DEVICE_ID_MISMATCH",
            DeviceError::NonceRequired => "DEVICE_AUTH_NONCE_REQUIRED",
            DeviceError::NonceMismatch => "DEVICE_AUTH_NONCE_MISMATCH",
            DeviceError::SignatureExpired => "DEVICE_AUTH_SIGNATURE_EXPIRED",
            DeviceError::SignatureInvalid => "DEVICE_AUTH_SIGNATURE_INVALID",
        }
    }

    /// OpenClaw's `details.reason` (`rejectDeviceAuthInvalid` in its message handler).
    pub fn reason(&self) -> &'static str {
        match self {
            DeviceError::PublicKeyInvalid => "device-public-key",
            DeviceError::IdMismatch => "device-id-mismatch",
            DeviceError::NonceRequired => "device-nonce-missing",
            DeviceError::NonceMismatch => "device-nonce-mismatch",
            DeviceError::SignatureExpired => "device-signature-stale",
            DeviceError::SignatureInvalid => "device-signature",
        }
    }
}

/// A device whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDevice {
    pub id: String,
    /// `"v2"` or `"v3"`: which payload the signature covered.
    pub payload_version: &'static str,
}

/// SHA-256 hex of a raw public key: OpenClaw's device id.
pub fn device_id(raw_public_key: &[u8]) -> String {
    let digest = Sha256::digest(raw_public_key);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Base64url without padding, as OpenClaw writes keys and signatures.
pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url or standard base64, padded or not (clients differ).
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim().trim_end_matches('=');
    let url: String = trimmed
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(url.as_bytes()).ok()
}

/// The raw 32-byte key from base64url raw bytes, or from a PEM/DER SPKI wrapper.
fn raw_public_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let bytes = if text.starts_with("-----BEGIN") {
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body.trim()).ok()?
    } else {
        decode_b64(text)?
    };
    let raw = match bytes.len() {
        32 => &bytes[..],
        44 if bytes[..12] == ED25519_SPKI_PREFIX => &bytes[12..],
        _ => return None,
    };
    raw.try_into().ok()
}

/// The v2 payload the signature must cover.
pub fn payload_v2(device_id: &str, ctx: &SignedContext<'_>, signed_at_ms: i64, nonce: &str) -> String {
    format!(
        "v2|{device_id}|{}|{}|{}|{}|{signed_at_ms}|{}|{nonce}",
        ctx.client_id,
        ctx.client_mode,
        ctx.role,
        ctx.scopes.join(","),
        ctx.token
    )
}

/// The v3 payload: v2 plus platform and device family.
pub fn payload_v3(
    device_id: &str,
    ctx: &SignedContext<'_>,
    signed_at_ms: i64,
    nonce: &str,
    platform: &str,
    family: &str,
) -> String {
    format!(
        "v3|{device_id}|{}|{}|{}|{}|{signed_at_ms}|{}|{nonce}|{platform}|{family}",
        ctx.client_id,
        ctx.client_mode,
        ctx.role,
        ctx.scopes.join(","),
        ctx.token
    )
}

/// Checks a device claim against the connection: key format, id, nonce, clock skew, signature.
pub fn verify(
    claim: &DeviceClaim<'_>,
    ctx: &SignedContext<'_>,
    now_ms: i64,
) -> Result<VerifiedDevice, DeviceError> {
    // As OpenClaw: a key no id can be derived from is an identity mismatch, checked first.
    let raw = raw_public_key(claim.public_key).ok_or(DeviceError::IdMismatch)?;
    let id = device_id(&raw);
    if !claim.id.trim().eq_ignore_ascii_case(&id) {
        return Err(DeviceError::IdMismatch);
    }
    let key = VerifyingKey::from_bytes(&raw).map_err(|_| DeviceError::PublicKeyInvalid)?;
    let nonce = claim.nonce.filter(|n| !n.is_empty()).ok_or(DeviceError::NonceRequired)?;
    if !crate::auth::constant_time_eq(nonce.as_bytes(), ctx.challenge_nonce.as_bytes()) {
        return Err(DeviceError::NonceMismatch);
    }
    if (now_ms - claim.signed_at_ms).abs() > MAX_SIGNATURE_SKEW_MS {
        return Err(DeviceError::SignatureExpired);
    }
    let signature = decode_b64(claim.signature)
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(DeviceError::SignatureInvalid)?;
    let ok = |payload: &str| key.verify_strict(payload.as_bytes(), &signature).is_ok();
    // v3 metadata is compared as sent and normalised (trimmed, lowercase), as clients differ.
    let (platform, family) = (ctx.platform.trim(), ctx.device_family.trim());
    let variants = [
        (platform.to_owned(), family.to_owned()),
        (platform.to_ascii_lowercase(), family.to_ascii_lowercase()),
    ];
    for (p, f) in &variants {
        if ok(&payload_v3(&id, ctx, claim.signed_at_ms, nonce, p, f)) {
            return Ok(VerifiedDevice { id, payload_version: "v3" });
        }
    }
    if ok(&payload_v2(&id, ctx, claim.signed_at_ms, nonce)) {
        return Ok(VerifiedDevice { id, payload_version: "v2" });
    }
    Err(DeviceError::SignatureInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    const NOW: i64 = 1_795_000_000_000;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn ctx<'a>(scopes: &'a [String]) -> SignedContext<'a> {
        SignedContext {
            challenge_nonce: "2f1c0c1e-6a43-4a8e-9d51-0c7b7e1d9a01",
            client_id: "gateway-client",
            client_mode: "backend",
            role: "operator",
            scopes,
            token: "s3cret",
            platform: "linux",
            device_family: "",
        }
    }

    fn signed(payload: &str, signing: &SigningKey) -> String {
        base64url(&signing.sign(payload.as_bytes()).to_bytes())
    }

    #[test]
    fn v2_and_v3_signatures_verify() {
        let signing = key();
        let public = base64url(signing.verifying_key().as_bytes());
        let id = device_id(signing.verifying_key().as_bytes());
        let scopes = vec!["operator.read".to_owned(), "operator.write".to_owned()];
        let ctx = ctx(&scopes);
        let nonce = ctx.challenge_nonce;
        for (payload, version) in [
            (payload_v2(&id, &ctx, NOW, nonce), "v2"),
            (payload_v3(&id, &ctx, NOW, nonce, "linux", ""), "v3"),
        ] {
            let signature = signed(&payload, &signing);
            let claim = DeviceClaim {
                id: &id,
                public_key: &public,
                signature: &signature,
                signed_at_ms: NOW,
                nonce: Some(nonce),
            };
            let verified = verify(&claim, &ctx, NOW + 5_000).expect(version);
            assert_eq!(verified, VerifiedDevice { id: id.clone(), payload_version: version });
        }
        assert!(payload_v2(&id, &ctx, NOW, nonce).starts_with(&format!(
            "v2|{id}|gateway-client|backend|operator|operator.read,operator.write|{NOW}|s3cret|"
        )));
    }

    #[test]
    fn tampering_is_refused_with_openclaw_codes() {
        let signing = key();
        let public = base64url(signing.verifying_key().as_bytes());
        let id = device_id(signing.verifying_key().as_bytes());
        let scopes = vec!["operator.read".to_owned()];
        let ctx = ctx(&scopes);
        let nonce = ctx.challenge_nonce;
        let signature = signed(&payload_v2(&id, &ctx, NOW, nonce), &signing);
        let claim = DeviceClaim {
            id: &id,
            public_key: &public,
            signature: &signature,
            signed_at_ms: NOW,
            nonce: Some(nonce),
        };

        // A signature over other scopes (privilege escalation) does not verify.
        let wider = vec!["operator.admin".to_owned()];
        let err = verify(&claim, &SignedContext { scopes: &wider, ..ctx.clone() }, NOW).unwrap_err();
        assert_eq!(err.code(), "DEVICE_AUTH_SIGNATURE_INVALID");
        // A replay on another connection (another challenge) is refused.
        let err =
            verify(&claim, &SignedContext { challenge_nonce: "other", ..ctx.clone() }, NOW).unwrap_err();
        assert_eq!(err, DeviceError::NonceMismatch);
        let err = verify(&claim, &ctx, NOW + MAX_SIGNATURE_SKEW_MS + 1).unwrap_err();
        assert_eq!(err.code(), "DEVICE_AUTH_SIGNATURE_EXPIRED");
        let other_id = "0".repeat(64);
        let err = verify(&DeviceClaim { id: &other_id, ..claim.clone() }, &ctx, NOW).unwrap_err();
        assert_eq!(err, DeviceError::IdMismatch);
        let err = verify(&DeviceClaim { public_key: "AAAA", ..claim.clone() }, &ctx, NOW).unwrap_err();
        assert_eq!((err.code(), err.reason()), ("DEVICE_AUTH_DEVICE_ID_MISMATCH", "device-id-mismatch"));
        let err = verify(&DeviceClaim { nonce: None, ..claim.clone() }, &ctx, NOW).unwrap_err();
        assert_eq!(err, DeviceError::NonceRequired);
        let err = verify(&DeviceClaim { signature: "not-base64!", ..claim.clone() }, &ctx, NOW).unwrap_err();
        assert_eq!(err, DeviceError::SignatureInvalid);
    }

    #[test]
    fn pem_keys_and_padded_base64_are_accepted() {
        let signing = key();
        let raw = signing.verifying_key().to_bytes();
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&raw);
        let pem =
            format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(&spki));
        assert_eq!(raw_public_key(&pem), Some(raw));
        assert_eq!(raw_public_key(&STANDARD.encode(raw)), Some(raw));
        assert_eq!(raw_public_key(&base64url(&spki)), Some(raw));
        // OpenClaw's id of a raw key: lowercase SHA-256 hex.
        assert_eq!(device_id(b"").len(), 64);
        assert_eq!(device_id(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
