//! Deserializers for values that arrive as strings from the environment and as typed
//! values from the config file.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, SeqAccess, Visitor};

use super::Secret;

/// `true`/`false` in any case, and nothing else: the seed's `== 'true'` test
/// silently turned verification off for `1` or `yes`; here they stop the binary.
pub fn parse_strict_bool(raw: &str) -> Result<bool, String> {
    if raw.trim().eq_ignore_ascii_case("true") {
        Ok(true)
    } else if raw.trim().eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(format!("must be true or false, got {raw:?}"))
    }
}

/// Splits a comma-separated list of secrets: trimmed, empty entries dropped.
pub fn split_secrets(raw: &str) -> Vec<Secret> {
    raw.split(',')
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
        .map(Secret::from)
        .collect()
}

/// serde `deserialize_with` for a boolean given as a TOML/JSON boolean or a string.
pub fn strict_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct StrictBool;
    impl Visitor<'_> for StrictBool {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, value: bool) -> Result<bool, E> {
            Ok(value)
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<bool, E> {
            parse_strict_bool(value).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<bool, E> {
            Err(E::custom(format!("must be true or false, got {value}")))
        }
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<bool, E> {
            Err(E::custom(format!("must be true or false, got {value}")))
        }
    }
    deserializer.deserialize_any(StrictBool)
}

/// serde `deserialize_with` for secrets given as one comma-separated string (the
/// environment) or as a list (the config file).
pub fn secret_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Secret>, D::Error> {
    struct SecretList;
    impl<'de> Visitor<'de> for SecretList {
        type Value = Vec<Secret>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a comma-separated string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<Vec<Secret>, E> {
            Ok(split_secrets(value))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<Secret>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Secret>, A::Error> {
            let mut secrets = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                secrets.extend(split_secrets(&item));
            }
            Ok(secrets)
        }
    }
    deserializer.deserialize_any(SecretList)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_bool_accepts_only_true_and_false_in_any_case() {
        for yes in ["true", "TRUE", "True", " true "] {
            assert_eq!(parse_strict_bool(yes), Ok(true));
        }
        for no in ["false", "FALSE", "False"] {
            assert_eq!(parse_strict_bool(no), Ok(false));
        }
        for bad in ["1", "0", "yes", "no", "on", "off", "", "tru"] {
            assert!(parse_strict_bool(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn secrets_are_split_on_commas_trimmed_and_empties_dropped() {
        let secrets = split_secrets(" old-secret , new-secret,,  ,");
        let exposed: Vec<&str> = secrets.iter().map(Secret::expose).collect();
        assert_eq!(exposed, ["old-secret", "new-secret"]);
        assert!(split_secrets(" , ").is_empty());
    }
}
