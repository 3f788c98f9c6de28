//! The seed's `SecureConfig`: the centralized API key stored Fernet-encrypted
//! (`CENTRALIZED_CALLING_API_KEY_ENCRYPTED`) under `ENCRYPTION_KEY`. Tokens are the
//! Fernet spec's, so Python's `cryptography.fernet` reads ours and we read its.

use fernet::Fernet;

use super::{ConfigError, Secret};

fn cipher(encryption_key: &str) -> Result<Fernet, ConfigError> {
    Fernet::new(encryption_key.trim()).ok_or_else(|| ConfigError::Invalid {
        setting: "ENCRYPTION_KEY".to_owned(),
        problem: "must be a Fernet key: 32 bytes in URL-safe base64 (make one with `python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)".to_owned(),
    })
}

/// Encrypts `api_key` into a Fernet token for `CENTRALIZED_CALLING_API_KEY_ENCRYPTED`
/// (`callbridge encrypt-key`).
pub fn encrypt_api_key(encryption_key: &str, api_key: &str) -> Result<String, ConfigError> {
    Ok(cipher(encryption_key)?.encrypt(api_key.as_bytes()))
}

/// Decrypts a token made by [`encrypt_api_key`] or by Python's `Fernet(key).encrypt`.
/// Tokens do not expire (the seed's `decrypt` sets no TTL).
pub fn decrypt_api_key(encryption_key: &str, token: &str) -> Result<Secret, ConfigError> {
    let undecryptable = |problem: &str| ConfigError::Invalid {
        setting: "CENTRALIZED_CALLING_API_KEY_ENCRYPTED".to_owned(),
        problem: problem.to_owned(),
    };
    let plaintext = cipher(encryption_key)?.decrypt(token.trim()).map_err(|_| {
        undecryptable("does not decrypt with ENCRYPTION_KEY (wrong key, or a damaged token)")
    })?;
    String::from_utf8(plaintext)
        .map(Secret::from)
        .map_err(|_| undecryptable("decrypts to bytes that are not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key_is_named() {
        let key = Fernet::generate_key();
        let token = encrypt_api_key(&key, "k-123").unwrap();
        assert_eq!(decrypt_api_key(&key, &token).unwrap().expose(), "k-123");

        let other = Fernet::generate_key();
        let error = decrypt_api_key(&other, &token).unwrap_err().to_string();
        assert!(
            error.starts_with("CENTRALIZED_CALLING_API_KEY_ENCRYPTED does not decrypt"),
            "{error}"
        );
        let error = encrypt_api_key("not-a-key", "k").unwrap_err().to_string();
        assert!(
            error.starts_with("ENCRYPTION_KEY must be a Fernet key"),
            "{error}"
        );
    }
}
