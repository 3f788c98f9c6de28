"""`callbridge encrypt-key` makes Fernet tokens that the seed's Python `SecureConfig`
(cryptography's Fernet) decrypts, and `--generate-key` makes keys it accepts."""

import subprocess

from cryptography.fernet import Fernet

from deploy_support import cli_binary


def run(args, env, stdin=""):
    return subprocess.run(
        [cli_binary(), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


class SecureConfig:
    """The seed's SecureConfig, verbatim but for taking the key as an argument."""

    def __init__(self, encryption_key):
        self.encryption_key = encryption_key
        self.cipher = Fernet(self.encryption_key.encode())

    def decrypt_api_key(self, encrypted_key):
        return self.cipher.decrypt(encrypted_key.encode()).decode()


def test_a_token_from_stdin_decrypts_with_the_seeds_secure_config():
    key = Fernet.generate_key().decode()
    result = run(["encrypt-key"], {"ENCRYPTION_KEY": key}, stdin="sk_live_ünïcode-42\n")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert SecureConfig(key).decrypt_api_key(token) == "sk_live_ünïcode-42"
    assert "CENTRALIZED_CALLING_API_KEY_ENCRYPTED" in result.stderr


def test_the_key_can_come_from_a_variable_and_a_generated_key_works_in_python():
    generated = run(["encrypt-key", "--generate-key"], {})
    assert generated.returncode == 0, generated.stderr
    key = generated.stdout.strip()
    Fernet(key.encode())  # accepted by cryptography
    result = run(
        ["encrypt-key", "--from-env", "CENTRALIZED_CALLING_API_KEY"],
        {"ENCRYPTION_KEY": key, "CENTRALIZED_CALLING_API_KEY": "abc123"},
    )
    assert result.returncode == 0, result.stderr
    assert SecureConfig(key).decrypt_api_key(result.stdout.strip()) == "abc123"


def test_a_missing_or_malformed_encryption_key_is_one_line_naming_it():
    missing = run(["encrypt-key"], {}, stdin="abc\n")
    assert missing.returncode != 0
    assert missing.stderr.count("\n") == 1
    assert "ENCRYPTION_KEY" in missing.stderr
    malformed = run(["encrypt-key"], {"ENCRYPTION_KEY": "not-a-key"}, stdin="abc\n")
    assert malformed.returncode != 0
    assert "ENCRYPTION_KEY must be a Fernet key" in malformed.stderr
