"""The seed guide's own `CentralizedCallingClient`, unchanged, against `callbridge-sim`:
submit, status, dispatch, a wrong key (401) and 1001 items (the documented 400)."""

import hashlib
import os
from pathlib import Path

import pytest
import requests

import seed_client
from seed_client import CentralizedCallingClient
from sim_harness import ACCOUNT_CODE, API_KEY, CallbackReceiver, SimProcess

VERBATIM_MARKER = "# --- verbatim from the seed guide below this line ---\n"
# SHA-256 of everything below the marker, taken when it was copied from the guide.
VERBATIM_SHA256 = "3a2c0be0ce38bea746ef00d9807f003fe3e3b459600fde5c8703d6c2d1ad973a"


@pytest.fixture
def receiver():
    with CallbackReceiver() as running:
        yield running


@pytest.fixture
def sim(receiver):
    with SimProcess(receiver.url) as running:
        yield running


def verbatim_code():
    return Path(seed_client.__file__).read_text().split(VERBATIM_MARKER, 1)[1]


def test_seed_code_is_still_the_guides_text():
    assert hashlib.sha256(verbatim_code().encode()).hexdigest() == VERBATIM_SHA256
    guide = os.environ.get("CALLBRIDGE_SEED_GUIDE")
    if guide:
        text = Path(guide).read_text()
        client, verify = verbatim_code().split("\n\nimport hmac\nimport hashlib\n\n")
        assert client in text
        assert verify in text


def test_submit_status_and_dispatch_read_as_the_seed_client_expects(sim):
    client = CentralizedCallingClient(sim.base_url + "/", API_KEY)
    numbers = [f"98765432{n:02d}" for n in range(12)]
    custom_data = {"campaign_id": "CAMP001", "customer_segment": "gold"}

    result = client.submit_call_batch(
        batch_id=12345, phone_numbers=numbers, custom_data=custom_data
    )
    assert result["status"] == "success"
    assert result["batch_id"] == 12345
    assert result["inserted_count"] == len(numbers)

    status = client.get_call_status(12345)
    assert status["status"] == "success"
    assert status["batch_id"] == 12345
    assert status["total"] == len(numbers)
    assert status["queued"] == len(numbers)
    assert status["phone_numbers"] == numbers

    dispatched = client.dispatch_calls()
    assert dispatched["status"] == "success"
    assert dispatched["dispatched"] == len(numbers)

    sim.wait_idle()
    status = client.get_call_status(12345)
    assert status["batch_status"] == "completed"
    assert status["completed"] + status["failed"] == len(numbers)
    assert status["queued"] == 0

    truth = sim.ground_truth()
    assert truth["batches"]["12345"]["accepted"] == {n: 1 for n in numbers}
    assert truth["batches"]["12345"]["accountcode"] == ACCOUNT_CODE
    assert all(call["custom_data"] == custom_data for call in truth["calls"])


def test_wrong_key_is_401_with_the_documented_message(sim):
    client = CentralizedCallingClient(sim.base_url, "not-the-key")
    expected = {"message": "Invalid API key", "status": "error"}
    assert client.submit_call_batch(1, ["9876543210"]) == expected
    assert client.get_call_status(1) == expected
    assert client.dispatch_calls() == expected

    response = requests.post(
        f"{sim.base_url}/api/v1/queues/insertdataincallqueue/",
        headers=client.headers,
        json={"batch_id": 1, "data": [{"phone_number": "9876543210"}]},
    )
    assert response.status_code == 401
    assert sim.ground_truth()["batches"] == {}


def test_1001_items_is_the_documented_400(sim):
    client = CentralizedCallingClient(sim.base_url, API_KEY)
    numbers = [f"9{n:09d}" for n in range(1001)]
    result = client.submit_call_batch(2, numbers)
    assert result == {
        "message": "Queue data exceeds max batch size 1000",
        "status": "error",
    }
    response = requests.post(
        f"{sim.base_url}/api/v1/queues/insertdataincallqueue/",
        headers=client.headers,
        json={"batch_id": 2, "data": [{"phone_number": n} for n in numbers]},
    )
    assert response.status_code == 400
    assert sim.ground_truth()["batches"] == {}

    assert client.submit_call_batch(2, numbers[:1000])["inserted_count"] == 1000
