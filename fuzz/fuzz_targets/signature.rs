//! Signature header parsing and verification (`X-Signature` and Standard Webhooks)
//! with arbitrary header strings, secrets and bodies.
//!
//! Beyond "never panics": whatever the headers hold, a request is accepted only when
//! a configured, non-empty secret produced its signature, and a genuine signature is
//! accepted in every spelling `verify_x_signature` allows (upper- or lower-case hex, a
//! `sha256=` prefix, surrounding whitespace).
#![no_main]

use arbitrary::Arbitrary;
use callbridge_types::signature::{
    SignatureError, SignatureHeaders, TIMESTAMP_TOLERANCE_SECS, sign_hex, sign_standard,
    verify_standard, verify_x_signature,
};
use libfuzzer_sys::fuzz_target;

/// More secrets only repeat the same work.
const MAX_SECRETS: usize = 4;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    secrets: Vec<&'a [u8]>,
    x_signature: Option<&'a str>,
    webhook_id: Option<&'a str>,
    webhook_timestamp: Option<&'a str>,
    webhook_signature: Option<&'a str>,
    body: &'a [u8],
    now_unix: i64,
    /// How far from `now_unix` a genuine Standard Webhooks signature is dated; i16
    /// spans both sides of the ±300 s window.
    signed_offset_secs: i16,
}

fuzz_target!(|input: Input<'_>| {
    let secrets = &input.secrets[..input.secrets.len().min(MAX_SECRETS)];
    arbitrary_headers_never_verify_without_a_secret(&input, secrets);
    genuine_x_signatures_verify_in_every_accepted_spelling(&input, secrets);
    genuine_standard_signatures_verify_inside_the_window_only(&input, secrets);
});

fn usable<'a>(secrets: &[&'a [u8]]) -> impl Iterator<Item = &'a [u8]> {
    secrets.iter().copied().filter(|secret| !secret.is_empty())
}

fn arbitrary_headers_never_verify_without_a_secret(input: &Input<'_>, secrets: &[&[u8]]) {
    let headers = SignatureHeaders {
        x_signature: input.x_signature,
        webhook_id: input.webhook_id,
        webhook_timestamp: input.webhook_timestamp,
        webhook_signature: input.webhook_signature,
    };
    let verdict = headers.verify(secrets, input.body, input.now_unix);
    if verdict.is_ok() {
        assert!(
            usable(secrets).next().is_some(),
            "accepted with no usable secret"
        );
    }
    if input.webhook_signature.is_some() {
        // A sender that chose Standard Webhooks is held to it.
        assert_eq!(
            verdict,
            verify_standard(
                secrets,
                input.webhook_id,
                input.webhook_timestamp,
                input.webhook_signature,
                input.body,
                input.now_unix,
            )
        );
        return;
    }
    let x_verdict = verify_x_signature(secrets, input.x_signature, input.body);
    assert_eq!(verdict, x_verdict);
    match input.x_signature.map(str::trim) {
        None | Some("") => assert_eq!(x_verdict, Err(SignatureError::Missing)),
        Some(value) if x_verdict.is_ok() => {
            // Accepted means: exactly the hex HMAC of one secret, spelled as allowed.
            let digits = value
                .get(..7)
                .filter(|prefix| prefix.eq_ignore_ascii_case("sha256="))
                .map_or(value, |_| &value[7..]);
            let digits = digits.to_ascii_lowercase();
            assert!(
                usable(secrets).any(|secret| sign_hex(secret, input.body) == digits),
                "accepted an X-Signature no secret produces"
            );
        }
        Some(_) => assert_ne!(x_verdict, Err(SignatureError::Missing)),
    }
}

fn genuine_x_signatures_verify_in_every_accepted_spelling(input: &Input<'_>, secrets: &[&[u8]]) {
    for secret in usable(secrets) {
        let signature = sign_hex(secret, input.body);
        for spelling in [
            signature.clone(),
            signature.to_ascii_uppercase(),
            format!("sha256={signature}"),
            format!("SHA256={}", signature.to_ascii_uppercase()),
            format!(" {signature}\t"),
        ] {
            assert_eq!(
                verify_x_signature(secrets, Some(&spelling), input.body),
                Ok(()),
                "genuine signature refused as {spelling:?}"
            );
        }
        // One hex digit short, or the body changed: refused (length checked, bound to
        // the body).
        let truncated = &signature[..signature.len() - 2];
        assert!(verify_x_signature(&[secret], Some(truncated), input.body).is_err());
        let mut tampered = input.body.to_vec();
        tampered.push(b' ');
        assert!(verify_x_signature(&[secret], Some(&signature), &tampered).is_err());
    }
}

fn genuine_standard_signatures_verify_inside_the_window_only(input: &Input<'_>, secrets: &[&[u8]]) {
    // Header values reach us trimmed (HTTP strips surrounding whitespace), never blank.
    let msg_id = input
        .webhook_id
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .unwrap_or("msg");
    let Some(signed_at) = input
        .now_unix
        .checked_add(i64::from(input.signed_offset_secs))
    else {
        return;
    };
    let timestamp = signed_at.to_string();
    let in_window = i64::from(input.signed_offset_secs).abs() <= TIMESTAMP_TOLERANCE_SECS;
    for secret in usable(secrets) {
        let signature = sign_standard(secret, msg_id, signed_at, input.body);
        // Several entries, unknown versions among them, are allowed in the header.
        let header = format!("v0,AAAA {signature} v2,{}", &signature[3..]);
        let verdict = verify_standard(
            secrets,
            Some(msg_id),
            Some(&timestamp),
            Some(&header),
            input.body,
            input.now_unix,
        );
        if in_window {
            assert_eq!(
                verdict,
                Ok(()),
                "genuine Standard Webhooks signature refused"
            );
        } else {
            assert_eq!(verdict, Err(SignatureError::TimestampOutOfWindow));
        }
        // The id and timestamp are signed: changing either breaks the signature.
        let other_id = format!("{msg_id}x");
        assert!(
            verify_standard(
                &[secret],
                Some(&other_id),
                Some(&timestamp),
                Some(&signature),
                input.body,
                input.now_unix,
            )
            .is_err()
        );
    }
}
