//! Erasing a person's number: the stand-in that replaces it where a row must stay (so
//! counts and figures do not change), and finding the number in any text or JSON it was
//! written into.
//!
//! The stand-in is `erased:` and the first 13 hex digits of HMAC-SHA256 of the number's
//! E.164 form under the erasure key: 20 characters, the width of the tables' number
//! columns. Keyed, so nobody without the key can test a guessed number against it (a
//! plain hash of a phone number is undone by hashing every number of the country); the
//! same for the same number, so an erased number that was on the do-not-call list can
//! still be recognised when it comes back: Postgres computes the same HMAC from the two
//! padded key blocks ([`HmacPads`]) with its built-in `sha256`, in the function
//! `callbridge_erased_stand_in`, and the submitter's claim compares every number it takes
//! with the list that way.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::phone::E164;

/// What every stand-in starts with.
pub const STAND_IN_PREFIX: &str = "erased:";
/// Hex digits of the HMAC kept: 52 bits, so two erased numbers share a stand-in only
/// among millions, and the stand-in fits a 20-character number column.
pub const STAND_IN_HEX_DIGITS: usize = 13;
/// The shortest erasure key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// SHA-256's block size, the length of HMAC's padded keys.
const BLOCK: usize = 64;

/// The stand-in of `number` under `key`: `erased:` and 13 hex digits.
pub fn stand_in(key: &[u8], number: &E164) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(number.as_str().as_bytes());
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("{STAND_IN_PREFIX}{}", &digest[..STAND_IN_HEX_DIGITS])
}

/// The key as HMAC uses it, padded to a block and XORed with its two constants:
/// HMAC(key, m) = SHA256(outer ‖ SHA256(inner ‖ m)). Bound as two `bytea` parameters, they
/// let SQL compute the stand-in without the key and without an extension.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacPads {
    pub inner: Vec<u8>,
    pub outer: Vec<u8>,
}

impl HmacPads {
    pub fn new(key: &[u8]) -> HmacPads {
        // A key longer than a block is hashed first (RFC 2104).
        let mut block = if key.len() > BLOCK {
            Sha256::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        block.resize(BLOCK, 0);
        HmacPads {
            inner: block.iter().map(|byte| byte ^ 0x36).collect(),
            outer: block.iter().map(|byte| byte ^ 0x5c).collect(),
        }
    }
}

impl std::fmt::Debug for HmacPads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // They are the key, XORed with constants.
        f.write_str("HmacPads([REDACTED])")
    }
}

/// Finds one number in text and JSON, in any way it may have been written, and replaces
/// it with its stand-in.
///
/// A number is written with separators (`+91 98765 43210`, `(212) 555-0100`), with or
/// without its country code or trunk zero; what every form shares is the national
/// significant number's digits. So a run of digits and separators whose digits contain
/// them is the number, and the whole run is replaced. This errs toward erasing: a longer
/// run that merely contains the digits is replaced too.
#[derive(Debug, Clone)]
pub struct Scrubber {
    national: String,
    stand_in: String,
}

impl Scrubber {
    pub fn new(number: &E164, stand_in: String) -> Scrubber {
        Scrubber {
            national: number.national().to_owned(),
            stand_in,
        }
    }

    /// The national significant number's digits: what a prefilter looks for in the
    /// digits of a value.
    pub fn digits(&self) -> &str {
        &self.national
    }

    pub fn stand_in(&self) -> &str {
        &self.stand_in
    }

    /// `text` with every run holding the number replaced; `None` when it holds none.
    pub fn text(&self, text: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        let mut rest = text;
        while let Some(start) = rest.find(|c: char| c.is_ascii_digit() || c == '+' || c == '(') {
            out.push_str(&rest[..start]);
            let run = &rest[start..];
            let run_len = run
                .find(|c: char| !(c.is_ascii_digit() || SEPARATORS.contains(c)))
                .unwrap_or(run.len());
            // The run ends at its last digit: trailing separators are the text's own.
            let end = run[..run_len]
                .rfind(|c: char| c.is_ascii_digit())
                .map_or(run_len.min(1), |last| last + 1);
            let digits: String = run[..end].chars().filter(char::is_ascii_digit).collect();
            if digits.contains(&self.national) {
                out.push_str(&self.stand_in);
                changed = true;
            } else {
                out.push_str(&run[..end]);
            }
            rest = &run[end..];
        }
        out.push_str(rest);
        changed.then_some(out)
    }

    /// Replaces the number in every string and number of `value` (not in object keys);
    /// whether anything changed. A JSON number holding it becomes the stand-in string.
    pub fn json(&self, value: &mut Value) -> bool {
        match value {
            Value::String(text) => match self.text(text) {
                Some(scrubbed) => {
                    *text = scrubbed;
                    true
                }
                None => false,
            },
            Value::Number(number) => {
                if number.to_string().contains(&self.national) {
                    *value = Value::String(self.stand_in.clone());
                    true
                } else {
                    false
                }
            }
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, item| self.json(item) | changed),
            Value::Object(fields) => fields
                .values_mut()
                .fold(false, |changed, item| self.json(item) | changed),
            Value::Null | Value::Bool(_) => false,
        }
    }

    /// A message body: as JSON when it is JSON (so it stays JSON), else as UTF-8 text;
    /// `None` when it holds the number nowhere. A body that is neither cannot be read,
    /// and is left as it is.
    pub fn body(&self, body: &[u8]) -> Option<Vec<u8>> {
        if let Ok(mut value) = serde_json::from_slice::<Value>(body) {
            return self
                .json(&mut value)
                .then(|| serde_json::to_vec(&value).expect("a JSON value serialises"));
        }
        let text = std::str::from_utf8(body).ok()?;
        self.text(text).map(String::into_bytes)
    }
}

/// What may stand between a number's digits.
const SEPARATORS: &str = " -.()/+";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::{Region, normalise};
    use serde_json::json;

    fn number(raw: &str) -> E164 {
        normalise(raw, Some(Region::parse("IN").unwrap())).unwrap()
    }

    fn scrubber() -> Scrubber {
        let number = number("9876543210");
        Scrubber::new(&number, stand_in(b"0123456789abcdef", &number))
    }

    #[test]
    fn the_stand_in_is_keyed_stable_and_fits_a_number_column() {
        let one = stand_in(b"0123456789abcdef", &number("9876543210"));
        assert_eq!(
            one,
            stand_in(b"0123456789abcdef", &number("+91 98765 43210"))
        );
        assert_ne!(one, stand_in(b"another key 0123", &number("9876543210")));
        assert_ne!(one, stand_in(b"0123456789abcdef", &number("9876543211")));
        assert_eq!(one.len(), 20);
        let digest = one.strip_prefix(STAND_IN_PREFIX).unwrap();
        assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{one}");
    }

    #[test]
    fn the_pads_give_the_same_hmac_as_the_hmac_crate() {
        for key in [&b"short key 16 byt"[..], &[7_u8; 64][..], &[9_u8; 100][..]] {
            let pads = HmacPads::new(key);
            let inner = Sha256::new()
                .chain_update(&pads.inner)
                .chain_update(b"+919876543210")
                .finalize();
            let outer = Sha256::new()
                .chain_update(&pads.outer)
                .chain_update(inner)
                .finalize();
            let via_pads = format!("{STAND_IN_PREFIX}{}", &hex::encode(outer)[..13]);
            assert_eq!(via_pads, stand_in(key, &number("9876543210")));
        }
    }

    #[test]
    fn every_written_form_of_the_number_is_found_and_other_text_kept() {
        let scrubber = scrubber();
        let s = scrubber.stand_in().to_owned();
        for form in [
            "9876543210",
            "+919876543210",
            "919876543210",
            "09876543210",
            "+91 98765 43210",
            "+91-98765-43210",
            "(0) 98765 43210",
        ] {
            assert_eq!(scrubber.text(form), Some(s.clone()), "{form}");
        }
        assert_eq!(
            scrubber.text("call +91 98765 43210, not 12345"),
            Some(format!("call {s}, not 12345"))
        );
        assert_eq!(scrubber.text("call 9876543211 or 12345"), None);
        assert_eq!(scrubber.text(""), None);
        assert_eq!(scrubber.text("(no number)"), None);
    }

    #[test]
    fn json_keeps_its_shape_and_loses_the_number_everywhere() {
        let scrubber = scrubber();
        let s = scrubber.stand_in();
        let mut value = json!({
            "phone_number": "9876543210",
            "data": {"phone_number": "+919876543210", "attempt": 2},
            "custom_data": {"alt": 919876543210_u64, "notes": ["ring 98765 43210 later"]},
            "9876543210": "keys are not numbers a person gave",
        });
        assert!(scrubber.json(&mut value));
        assert_eq!(
            value,
            json!({
                "phone_number": s,
                "data": {"phone_number": s, "attempt": 2},
                "custom_data": {"alt": s, "notes": [format!("ring {s} later")]},
                "9876543210": "keys are not numbers a person gave",
            })
        );
        assert!(!scrubber.json(&mut json!({"phone_number": "+15550100"})));
        let body = scrubber
            .body(br#"{"event":{"phone_number":"9876543210"}}"#)
            .unwrap();
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["event"]["phone_number"], s);
        assert_eq!(
            scrubber.body(b"not json: 9876543210"),
            Some(format!("not json: {s}").into_bytes())
        );
        assert_eq!(scrubber.body(b"\xff\xfe 9876543210"), None);
    }
}
