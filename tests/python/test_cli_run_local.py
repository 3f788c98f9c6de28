"""`make run`'s script, non-interactively: it brings the whole stack up, the demo
campaign completes, the final table says so, it stops every process it started, and the
line it prints points the CLI at the demo through the env file it leaves."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_URL = os.environ.get("CALLBRIDGE_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")


def test_run_local_completes_the_demo_campaign_and_stops_what_it_started():
    database = f"cbtest_runlocal_{uuid.uuid4().hex}"
    db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    env = {
        **os.environ,
        "CLIENT_CALLING_DB_URL": db_url,
        # Fixed ports below the ephemeral range, away from a developer's `make run`.
        "INGRESS_PORT": "18080",
        "SIM_PORT": "18090",
        "PERSISTER_PORT": "19101",
        "SUBMITTER_PORT": "19102",
        "CONSOLE_PORT": "19103",
        # Not the developer's run/: its latest.env must keep pointing at their own demo.
        "RUN_LOCAL_DIR": tempfile.mkdtemp(prefix="callbridge-run-local-"),
    }
    try:
        result = subprocess.run(
            ["scripts/run-local.sh", "--exit-when-done"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        run_dir = Path(re.search(r"logs are in (\S+)", result.stderr).group(1))
        final = (run_dir / "final.txt").read_text().splitlines()
        assert final[0].startswith("BATCH")
        assert len(final) == 3, final
        for row in final[1:]:
            cells = row.split()
            assert "completed" in cells, row
        # Every process it started is gone.
        for name in ("sim", "ingress", "persister", "submitter", "console"):
            pid = int((run_dir / f"{name}.pid").read_text())
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), name
        # It printed the console's URL and a sign-in token of its own making.
        console = re.search(r"operator console: (http://127\.0\.0\.1:19103)  token: ([0-9a-f]{48})$", result.stderr, re.MULTILINE)
        assert console, result.stderr[-3000:]
        assert (run_dir / "console.log").read_text(), "the console ran and logged"
        with psycopg.connect(db_url) as conn:
            (calls,) = conn.execute("SELECT count(*) FROM call_logs").fetchone()
            (numbers,) = conn.execute("SELECT count(DISTINCT phone_number) FROM local_call_queue").fetchone()
        assert calls == numbers == 1000

        # The env file it leaves, linked as latest.env, and the one line it prints:
        # in a shell that has none of the demo's settings, the CLI finds its batches.
        env_file = run_dir / "callbridge.env"
        assert (Path(env["RUN_LOCAL_DIR"]) / "latest.env").resolve() == env_file.resolve()
        assert env_file.stat().st_mode & 0o077 == 0, "the env file holds the API key"
        printed = re.search(
            r"(set -a; \. \S+/latest\.env; set \+a; \S+/callbridge batches)$",
            result.stderr,
            re.MULTILINE,
        )
        assert printed, result.stderr[-3000:]
        bare = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("CLIENT_CALLING_", "CENTRALIZED_CALLING_", "CALLBACK_", "RABBITMQ_"))
        }
        listed = subprocess.run(
            ["bash", "-c", printed.group(1) + " --local --json"],
            cwd=REPO_ROOT,
            env=bare,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        batches = json.loads(listed.stdout)
        assert len(batches) == len(final) - 1, batches
        assert all(batch["batch_status"] == "completed" for batch in batches), batches
    finally:
        shutil.rmtree(env["RUN_LOCAL_DIR"], ignore_errors=True)
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
