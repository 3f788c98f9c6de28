"""Callbacks from `callbridge-sim`, checked with the seed's own Python: each verifies with
`verify_callback_signature`, carries every field of the seed's payload, and a call's
events arrive in order (started, [answered,] outcome) unless reordering is on."""

from collections import defaultdict

import pytest

from seed_client import CentralizedCallingClient
from sim_harness import (
    ACCOUNT_CODE,
    API_KEY,
    SEED_FIELDS,
    CallbackReceiver,
    SimProcess,
)

TERMINAL = {
    "completed": "call_completed",
    "busy": "call_busy",
    "no_answer": "call_no_answer",
    "failed": "call_failed",
    "timeout": "call_timeout",
}


def expected_events(outcome):
    middle = ["call_answered"] if outcome == "completed" else []
    return ["call_started", *middle, TERMINAL[outcome]]


def run_campaign(sim, batch_id, count):
    client = CentralizedCallingClient(sim.base_url, API_KEY)
    numbers = [f"91{batch_id:04d}{n:04d}" for n in range(count)]
    result = client.submit_call_batch(batch_id, numbers, {"campaign_id": "CAMP001"})
    assert result["status"] == "success"
    assert client.dispatch_calls()["status"] == "success"
    sim.wait_idle()
    return numbers


def events_by_call(callbacks):
    calls = defaultdict(list)
    for callback in callbacks:
        calls[callback["call_id"]].append(callback["event_type"])
    return calls


@pytest.fixture
def receiver():
    with CallbackReceiver() as running:
        yield running


def test_callbacks_verify_with_the_seed_function_carry_every_field_and_keep_order(
    receiver,
):
    with SimProcess(receiver.url) as sim:
        numbers = run_campaign(sim, 501, 30)
        truth = sim.ground_truth()

    assert receiver.rejected == [], "every callback verifies with the seed's function"
    callbacks = receiver.callbacks()
    for callback in callbacks:
        assert set(SEED_FIELDS) <= set(callback), callback
        assert callback["accountcode"] == ACCOUNT_CODE
        assert callback["batch_id"] == 501
        assert callback["phone_number"] in numbers
        assert callback["custom_data"] == {"campaign_id": "CAMP001"}
        assert callback["call_id"]

    by_call = events_by_call(callbacks)
    assert len(by_call) == len(numbers)
    for call in truth["calls"]:
        assert by_call[call["call_id"]] == expected_events(call["outcome"])
        assert all(event["acknowledged"] for event in call["events"])
    assert truth["totals"]["callbacks_acknowledged"] == len(callbacks)


def test_callbacks_signed_with_another_secret_fail_the_seed_check_and_are_not_acknowledged(
    receiver,
):
    receiver.secret = "the-client-has-a-different-secret"
    with SimProcess(receiver.url, SIM_CALLBACK_MAX_ATTEMPTS="2") as sim:
        run_campaign(sim, 502, 2)
        truth = sim.ground_truth()

    assert receiver.accepted == []
    assert receiver.rejected
    for call in truth["calls"]:
        for event in call["events"]:
            assert not event["acknowledged"]
            assert event["gave_up"]
            assert event["last_status"] == 401
            assert event["attempts"] == 2


def test_reordering_knob_reverses_each_calls_events(receiver):
    with SimProcess(receiver.url) as sim:
        sim.set_knobs(reorder_rate=1.0)
        run_campaign(sim, 503, 8)
        truth = sim.ground_truth()

    by_call = events_by_call(receiver.callbacks())
    for call in truth["calls"]:
        assert call["reordered"]
        assert by_call[call["call_id"]] == expected_events(call["outcome"])[::-1]


def test_outcome_mix_from_the_environment_decides_outcomes(receiver):
    with SimProcess(receiver.url, SIM_OUTCOME_MIX="no_answer=1") as sim:
        run_campaign(sim, 504, 5)
        truth = sim.ground_truth()
    assert {call["outcome"] for call in truth["calls"]} == {"no_answer"}
    assert {c["event_type"] for c in receiver.callbacks()} == {
        "call_started",
        "call_no_answer",
    }
