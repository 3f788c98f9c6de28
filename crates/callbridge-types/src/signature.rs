//! Callback signatures, both schemes, sign and verify, over the raw body.
//!
//! - `X-Signature`: hex HMAC-SHA256(secret, body), the seed's scheme. Upper- or
//!   lower-case hex, an optional `sha256=` prefix and surrounding whitespace are accepted.
//! - Standard Webhooks (<https://www.standardwebhooks.com>): `webhook-signature` holds
//!   space-separated `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` entries;
//!   `webhook-timestamp` must be within ±[`TIMESTAMP_TOLERANCE_SECS`] of now, which
//!   gives a sender replay protection.
//!
//! Every comparison goes through [`Mac::verify_slice`]: constant time, length checked.
//! Several secrets may be configured (rotation): a signature made with any of them is
//! accepted. Empty secrets are ignored when verifying, so a stray comma in
//! `CALLBACK_SECRET_KEY` cannot turn into "the empty key is valid".

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far `webhook-timestamp` may be from now, either way.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;
/// Header of the seed's scheme.
pub const X_SIGNATURE_HEADER: &str = "X-Signature";
/// Standard Webhooks headers.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";
/// Prefix marking a Standard Webhooks secret whose remainder is base64.
pub const STANDARD_SECRET_PREFIX: &str = "whsec_";

/// Why a request's signature was refused. Display is the ingress's 401 `error` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature (or a blank one), or a Standard Webhooks header missing.
    #[error("Missing signature")]
    Missing,
    /// A signature that no configured secret produces, or that cannot be read.
    #[error("Invalid signature")]
    Invalid,
    /// A Standard Webhooks timestamp outside the tolerance: possibly a replay.
    #[error("Signature timestamp outside the allowed window")]
    TimestampOutOfWindow,
}

fn mac_for(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

fn usable_secrets<S: AsRef<[u8]>>(secrets: &[S]) -> impl Iterator<Item = &[u8]> {
    secrets.iter().map(AsRef::as_ref).filter(|s| !s.is_empty())
}

/// Lower-case hex HMAC-SHA256 of `body` under `secret`: the `X-Signature` value.
pub fn sign_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = mac_for(secret);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Verifies an `X-Signature` header value against every secret.
pub fn verify_x_signature<S: AsRef<[u8]>>(
    secrets: &[S],
    header: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let value = non_blank(header).ok_or(SignatureError::Missing)?;
    let hex_digits = strip_prefix_ignore_case(value, "sha256=").unwrap_or(value);
    let tag = hex::decode(hex_digits).map_err(|_| SignatureError::Invalid)?;
    let matches = usable_secrets(secrets).any(|secret| {
        let mut mac = mac_for(secret);
        mac.update(body);
        mac.verify_slice(&tag).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Invalid)
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// The HMAC key a Standard Webhooks secret stands for: the base64-decoded remainder of
/// a `whsec_…` secret, otherwise the secret's own bytes.
///
/// A `whsec_` secret whose remainder is not base64 is used as raw bytes, the same way
/// by signer and verifier; configuration should reject it at start with
/// [`is_well_formed_standard_secret`] rather than rely on that.
pub fn standard_key(secret: &[u8]) -> Cow<'_, [u8]> {
    secret
        .strip_prefix(STANDARD_SECRET_PREFIX.as_bytes())
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .map_or(Cow::Borrowed(secret), Cow::Owned)
}

/// False for a `whsec_` secret whose remainder is not valid base64.
pub fn is_well_formed_standard_secret(secret: &[u8]) -> bool {
    match secret.strip_prefix(STANDARD_SECRET_PREFIX.as_bytes()) {
        Some(encoded) => BASE64.decode(encoded).is_ok(),
        None => true,
    }
}

fn standard_mac(key: &[u8], msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = mac_for(key);
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value (`v1,<base64>`) for a message.
pub fn sign_standard(secret: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = standard_mac(&standard_key(secret), msg_id, &timestamp.to_string(), body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

fn non_blank(header: Option<&str>) -> Option<&str> {
    header.map(str::trim).filter(|value| !value.is_empty())
}

/// Verifies Standard Webhooks headers against every secret at time `now_unix`.
///
/// Any missing header is [`SignatureError::Missing`]; a timestamp that is not an integer
/// is [`SignatureError::Invalid`]; one outside the window is
/// [`SignatureError::TimestampOutOfWindow`] (checked before the signature, as the
/// Standard Webhooks reference libraries do). Entries with a version other than `v1`
/// are skipped; the timestamp is signed as the header spells it.
pub fn verify_standard<S: AsRef<[u8]>>(
    secrets: &[S],
    msg_id: Option<&str>,
    timestamp: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), SignatureError> {
    let (Some(msg_id), Some(timestamp), Some(signature_header)) = (
        non_blank(msg_id),
        non_blank(timestamp),
        non_blank(signature_header),
    ) else {
        return Err(SignatureError::Missing);
    };
    let sent_at: i64 = timestamp.parse().map_err(|_| SignatureError::Invalid)?;
    if now_unix.abs_diff(sent_at) > TIMESTAMP_TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::TimestampOutOfWindow);
    }
    let tags: Vec<Vec<u8>> = signature_header
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .collect();
    let matches = usable_secrets(secrets).any(|secret| {
        let key = standard_key(secret);
        tags.iter().any(|tag| {
            standard_mac(&key, msg_id, timestamp, body)
                .verify_slice(tag)
                .is_ok()
        })
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Invalid)
    }
}

/// The signature headers of one request, as the ingress (or `callbridge doctor`) read them.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignatureHeaders<'a> {
    pub x_signature: Option<&'a str>,
    pub webhook_id: Option<&'a str>,
    pub webhook_timestamp: Option<&'a str>,
    pub webhook_signature: Option<&'a str>,
}

impl SignatureHeaders<'_> {
    /// Verifies whichever scheme the sender chose: Standard Webhooks when a
    /// `webhook-signature` header is present (a sender that opted into replay
    /// protection is held to it), `X-Signature` otherwise.
    pub fn verify<S: AsRef<[u8]>>(
        &self,
        secrets: &[S],
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), SignatureError> {
        if self.webhook_signature.is_some() {
            verify_standard(
                secrets,
                self.webhook_id,
                self.webhook_timestamp,
                self.webhook_signature,
                body,
                now_unix,
            )
        } else {
            verify_x_signature(secrets, self.x_signature, body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"event_type":"call_completed"}"#;

    #[test]
    fn sign_hex_round_trips_through_verify() {
        let signature = sign_hex(b"secret", BODY);
        assert_eq!(signature.len(), 64);
        assert_eq!(
            verify_x_signature(&["secret"], Some(&signature), BODY),
            Ok(())
        );
    }

    #[test]
    fn blank_or_absent_x_signature_is_missing() {
        assert_eq!(
            verify_x_signature(&["s"], None, BODY),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_x_signature(&["s"], Some("  "), BODY),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn non_hex_or_odd_length_is_invalid_not_a_panic() {
        for junk in ["zz", "abc", "sha256=", "ß", "sha256", "0x00"] {
            assert_eq!(
                verify_x_signature(&["s"], Some(junk), BODY),
                Err(SignatureError::Invalid),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn empty_secrets_never_verify() {
        let signed_with_empty_key = sign_hex(b"", BODY);
        assert_eq!(
            verify_x_signature(&["", "other"], Some(&signed_with_empty_key), BODY),
            Err(SignatureError::Invalid)
        );
        let no_secrets: [&str; 0] = [];
        assert_eq!(
            verify_x_signature(&no_secrets, Some(&signed_with_empty_key), BODY),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn whsec_secret_uses_its_decoded_key() {
        let raw_key = b"0123456789abcdef";
        let secret = format!("whsec_{}", BASE64.encode(raw_key));
        let by_prefix = sign_standard(secret.as_bytes(), "msg_1", 1_700_000_000, BODY);
        let by_raw = sign_standard(raw_key, "msg_1", 1_700_000_000, BODY);
        assert_eq!(by_prefix, by_raw);
        assert!(is_well_formed_standard_secret(secret.as_bytes()));
        assert!(!is_well_formed_standard_secret(b"whsec_not base64!"));
        assert!(is_well_formed_standard_secret(b"plain secret"));
    }

    #[test]
    fn standard_webhooks_missing_headers_and_bad_timestamp() {
        let sig = sign_standard(b"s", "id", 100, BODY);
        assert_eq!(
            verify_standard(&["s"], None, Some("100"), Some(&sig), BODY, 100),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_standard(&["s"], Some("id"), Some("soon"), Some(&sig), BODY, 100),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify_standard(&["s"], Some("id"), Some("100"), Some("v1,!!"), BODY, 100),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn headers_choose_standard_webhooks_when_webhook_signature_is_present() {
        let x = sign_hex(b"s", BODY);
        let only_x = SignatureHeaders {
            x_signature: Some(&x),
            ..Default::default()
        };
        assert_eq!(only_x.verify(&["s"], BODY, 0), Ok(()));
        // A sender that opted into Standard Webhooks cannot fall back to X-Signature.
        let both = SignatureHeaders {
            x_signature: Some(&x),
            webhook_signature: Some("v1,AAAA"),
            webhook_id: Some("id"),
            webhook_timestamp: Some("0"),
        };
        assert_eq!(both.verify(&["s"], BODY, 0), Err(SignatureError::Invalid));
        let none = SignatureHeaders::default();
        assert_eq!(none.verify(&["s"], BODY, 0), Err(SignatureError::Missing));
    }

    #[test]
    fn errors_display_the_ingress_response_text() {
        assert_eq!(SignatureError::Missing.to_string(), "Missing signature");
        assert_eq!(SignatureError::Invalid.to_string(), "Invalid signature");
    }
}
