"""The `callbridge-sim` binary as an operator runs it: a bad or missing setting stops it
with one line naming the variable; SIGTERM stops it cleanly."""

import os
import subprocess

import pytest

from sim_harness import API_KEY, CALLBACK_SECRET, SimProcess, sim_binary

REQUIRED = {
    "SIM_API_KEY": API_KEY,
    "SIM_CALLBACK_URL": "http://127.0.0.1:9/callback",
    "SIM_CALLBACK_SECRET": CALLBACK_SECRET,
}


def run_with(env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIM_")}
    return subprocess.run(
        [str(sim_binary())],
        env={**clean, "SIM_BIND": "127.0.0.1:0", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_missing_required_setting_names_the_variable(missing):
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    result = run_with(env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert missing in lines[0]


@pytest.mark.parametrize(
    "variable,value",
    [("SIM_FAST", "yes"), ("SIM_ERROR_RATE", "2"), ("SIM_OUTCOME_MIX", "answered=1")],
)
def test_malformed_setting_names_the_variable(variable, value):
    result = run_with({**REQUIRED, variable: value})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]


def test_sigterm_stops_the_simulator_cleanly():
    sim = SimProcess("http://127.0.0.1:9/callback")
    with sim:
        pass
    assert sim.process.returncode == 0
    assert API_KEY not in sim.process.stderr.read().decode()
