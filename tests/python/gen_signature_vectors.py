"""Signature test vectors for callbridge-types, computed by Python's own hmac module.

Regenerate (from the repository root) with:

    python3 tests/python/gen_signature_vectors.py > crates/callbridge-types/tests/fixtures/signature_vectors.json

Only the standard library is used (hmac, hashlib, base64, json), so the vectors are
independent of the Rust code they check. Each vector names the scheme, the configured
secrets, the request headers, the raw body, the verifier's clock and the expected
outcome: "ok", "missing", "invalid" or "timestamp_out_of_window". A vector with
"signed_by" also checks the Rust signer: signing its body with that secret (and, for
Standard Webhooks, the vector's id and timestamp) must give exactly the header value.
"""

import base64
import hashlib
import hmac
import json
import sys

COMMAND = (
    "python3 tests/python/gen_signature_vectors.py > "
    "crates/callbridge-types/tests/fixtures/signature_vectors.json"
)

SECRET = "your_callback_secret_key"
OLD_SECRET = "previous-secret-before-rotation"
BODY = json.dumps(
    {
        "event_type": "call_completed",
        "batch_id": 12345,
        "phone_number": "9876543210",
        "call_status": "completed",
        "duration": 120,
    },
    separators=(",", ":"),
)
UNICODE_BODY = '{"event_type":"call_failed","error_message":"numéro injoignable ☎"}'
NOW = 1_700_000_000
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
WHSEC_KEY = bytes(range(24))
WHSEC = "whsec_" + base64.b64encode(WHSEC_KEY).decode()


def x_signature(secret: str, body: str) -> str:
    """The seed's verify_callback_signature, signing side."""
    return hmac.new(secret.encode("utf-8"), body.encode("utf-8"), hashlib.sha256).hexdigest()


def standard_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode("utf-8")


def standard_signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    content = f"{msg_id}.{timestamp}.{body}".encode("utf-8")
    digest = hmac.new(standard_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def x_vector(name, secrets, header, expected, body=BODY, signed_by=None):
    return {
        "name": name,
        "scheme": "x_signature",
        "secrets": secrets,
        "headers": {} if header is None else {"X-Signature": header},
        "body": body,
        "now": NOW,
        "expected": expected,
        "signed_by": signed_by,
    }


def standard_vector(name, secrets, timestamp, signature, expected, body=BODY, now=NOW, signed_by=None):
    return {
        "name": name,
        "scheme": "standard_webhooks",
        "secrets": secrets,
        "headers": {
            "webhook-id": MSG_ID,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        },
        "body": body,
        "now": now,
        "expected": expected,
        "signed_by": signed_by,
    }


def vectors():
    good = x_signature(SECRET, BODY)
    yield x_vector("valid lowercase hex", [SECRET], good, "ok", signed_by=SECRET)
    yield x_vector("valid uppercase hex", [SECRET], good.upper(), "ok")
    yield x_vector("sha256= prefix", [SECRET], "sha256=" + good, "ok")
    yield x_vector("surrounding whitespace", [SECRET], f"  {good}\t", "ok")
    yield x_vector("unicode body", [SECRET], x_signature(SECRET, UNICODE_BODY), "ok", UNICODE_BODY, SECRET)
    yield x_vector("wrong secret", [SECRET], x_signature("not-the-secret", BODY), "invalid")
    yield x_vector("truncated", [SECRET], good[:-2], "invalid")
    yield x_vector("truncated to one byte", [SECRET], good[:2], "invalid")
    yield x_vector("extended", [SECRET], good + "00", "invalid")
    yield x_vector("body changed", [SECRET], good, "invalid", BODY.replace("120", "121"))
    yield x_vector("not hex", [SECRET], "g" * 64, "invalid")
    yield x_vector("empty header", [SECRET], "", "missing")
    yield x_vector("absent header", [SECRET], None, "missing")
    yield x_vector("rotated: signed with old secret", [SECRET, OLD_SECRET], x_signature(OLD_SECRET, BODY), "ok")
    yield x_vector("rotated: signed with new secret", [SECRET, OLD_SECRET], good, "ok")
    yield x_vector("rotation retired the old secret", [SECRET], x_signature(OLD_SECRET, BODY), "invalid")

    std_good = standard_signature(SECRET, MSG_ID, NOW, BODY)
    yield standard_vector("standard: valid", [SECRET], NOW, std_good, "ok", signed_by=SECRET)
    yield standard_vector("standard: whsec_ secret", [WHSEC], NOW, standard_signature(WHSEC, MSG_ID, NOW, BODY), "ok", signed_by=WHSEC)
    yield standard_vector(
        "standard: several entries, one matches",
        [SECRET],
        NOW,
        "v1,AAAA v2,xyz " + std_good,
        "ok",
    )
    yield standard_vector(
        "standard: rotated secret",
        [SECRET, OLD_SECRET],
        NOW,
        standard_signature(OLD_SECRET, MSG_ID, NOW, BODY),
        "ok",
    )
    yield standard_vector("standard: wrong secret", [SECRET], NOW, standard_signature("nope", MSG_ID, NOW, BODY), "invalid")
    yield standard_vector("standard: no v1 prefix", [SECRET], NOW, std_good[len("v1,"):], "invalid")
    yield standard_vector(
        "standard: truncated",
        [SECRET],
        NOW,
        "v1," + base64.b64encode(base64.b64decode(std_good[3:])[:16]).decode(),
        "invalid",
    )
    for offset, expected in [(-300, "ok"), (300, "ok"), (-301, "timestamp_out_of_window"), (301, "timestamp_out_of_window")]:
        timestamp = NOW + offset
        yield standard_vector(
            f"standard: timestamp {offset:+d} s",
            [SECRET],
            timestamp,
            standard_signature(SECRET, MSG_ID, timestamp, BODY),
            expected,
        )
    yield standard_vector(
        "standard: signed for another timestamp",
        [SECRET],
        NOW,
        standard_signature(SECRET, MSG_ID, NOW - 1, BODY),
        "invalid",
    )


def main():
    document = {
        "generated_by": COMMAND,
        "vectors": list(vectors()),
    }
    json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
