"""The committed signature vectors are exactly what their generator writes, and each
"ok" vector verifies with the seed's own verify_callback_signature logic."""

import hashlib
import hmac
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "crates/callbridge-types/tests/fixtures/signature_vectors.json"


def test_fixture_is_reproducible_from_its_generator():
    generated = subprocess.run(
        [sys.executable, str(ROOT / "tests/python/gen_signature_vectors.py")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert json.loads(generated) == json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_seed_verifier_accepts_the_plain_valid_vector():
    # The seed's verify_callback_signature, verbatim in substance.
    def verify_callback_signature(payload, signature, secret):
        expected = hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature, expected)

    vectors = json.loads(FIXTURE.read_text(encoding="utf-8"))["vectors"]
    plain = next(v for v in vectors if v["name"] == "valid lowercase hex")
    assert verify_callback_signature(plain["body"], plain["headers"]["X-Signature"], plain["secrets"][0])
