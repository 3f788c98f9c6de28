"""The README's backup / restore / rollback runbook, run for real: its `sh` blocks, taken
from README.md by their `<!-- runbook:NAME -->` markers, back up a migrated database
holding a realistic set of rows, restore it into a new database with the same counts,
sequence and migrations, and roll the newest migration back. The shared Postgres is
CALLBRIDGE_TEST_PG (default postgres://postgres@127.0.0.1:5432/postgres)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from deploy_support import cli_binary, fresh_database_name

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
ADMIN_URL = os.environ.get("CALLBRIDGE_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")
NEWEST_MIGRATION = max(
    int(path.name.split("_")[0]) for path in (REPO_ROOT / "migrations").glob("*.up.sql")
)


def postgres_bin_dir() -> str | None:
    """The newest /usr/lib/postgresql/N/bin, so pg_dump is at least as new as the server."""
    dirs = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return str(dirs[-1]) if dirs else None


def database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def runbook_block(name: str) -> str:
    """The `sh` block between `<!-- runbook:NAME -->` and `<!-- /runbook:NAME -->`."""
    text = README.read_text()
    match = re.search(
        rf"<!-- runbook:{name} -->\s*```sh\n(.*?)```\s*<!-- /runbook:{name} -->",
        text,
        re.DOTALL,
    )
    assert match, (
        f"README.md has no ```sh block between <!-- runbook:{name} --> and "
        f"<!-- /runbook:{name} -->"
    )
    return match.group(1)


def run_block(name: str, variables: dict[str, str], cwd: Path) -> str:
    """Runs the block with bash -euo pipefail, `callbridge` on PATH, and only the given
    connection settings (none inherited from the developer's shell)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CLIENT_CALLING_", "CALLBRIDGE", "PG", "RABBITMQ_"))
    }
    path = [str(cli_binary().parent)]
    if (pg_bin := postgres_bin_dir()) is not None:
        path.append(pg_bin)
    env["PATH"] = os.pathsep.join([*path, env.get("PATH", "")])
    env.update(variables)
    script = "set -euo pipefail\n" + runbook_block(name)
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (
        f"runbook:{name} failed (exit {result.returncode})\n--- script\n{script}"
        f"\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    return result.stdout


SEED = """
INSERT INTO campaigns (name, status, window_start, window_end, time_zone, max_per_minute,
                       redial_busy_retries, redial_busy_interval_secs)
VALUES ('spring-renewals', 'active', '09:00', '18:00', 'Europe/Paris', 60, 2, 600),
       ('winter-survey', 'paused', NULL, NULL, 'UTC', NULL, 0, NULL);

INSERT INTO campaign_pacing (campaign_id, next_slot_at)
SELECT id, now() + interval '1 second' FROM campaigns WHERE name = 'spring-renewals';

-- Batch ids as `callbridge enqueue` takes them, so the sequence moves.
CREATE TEMPORARY TABLE ids AS SELECT callbridge_allocate_batch_ids(3) AS batch_id;

INSERT INTO call_batches (batch_id, accountcode, batch_name, total_calls, completed_calls,
                          failed_calls, batch_status, submitted_at, completed_at,
                          campaign_id, answered_seconds)
SELECT i.batch_id, 'ACME', 'spring-renewals #' || row_number() OVER (ORDER BY i.batch_id),
       3, 1, 1, 'in_progress', now() - interval '1 hour', NULL,
       (SELECT id FROM campaigns WHERE name = 'spring-renewals'), 42
  FROM ids i;

INSERT INTO local_call_queue (phone_number, phone_e164, batch_id, campaign_id, campaign_key,
                              queue_status, retry_count, custom_data, time_zone, attempt,
                              submitted_at, lease_owner, lease_expires_at, last_error)
SELECT '+3361234' || lpad(n::text, 4, '0'), '+3361234' || lpad(n::text, 4, '0'),
       CASE WHEN status IN ('submitted', 'submitting', 'needs_review', 'failed')
            THEN (SELECT min(batch_id) FROM ids) END,
       (SELECT id FROM campaigns WHERE name = 'spring-renewals'),
       'campaign:spring-renewals', status, CASE WHEN status = 'failed' THEN 3 ELSE 0 END,
       jsonb_build_object('customer', n), 'Europe/Paris', 1,
       CASE WHEN status = 'submitted' THEN now() - interval '1 hour' END,
       CASE WHEN status = 'submitting' THEN 'submitter-0' END,
       CASE WHEN status = 'submitting' THEN now() + interval '30 seconds' END,
       CASE WHEN status = 'failed' THEN '422 from the centralized API' END
  FROM (VALUES (1, 'pending'), (2, 'pending'), (3, 'submitting'), (4, 'submitted'),
               (5, 'submitted'), (6, 'failed'), (7, 'cancelled'), (8, 'suppressed'),
               (9, 'needs_review')) AS v(n, status);

INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status,
                       disposition, duration, start_time, end_time, custom_data)
SELECT 'call-' || n, 'ACME', (SELECT min(batch_id) FROM ids), '+3361234' || lpad(n::text, 4, '0'),
       status, upper(status), CASE WHEN status = 'completed' THEN 42 ELSE 0 END,
       now()::timestamp - interval '50 minutes', now()::timestamp - interval '49 minutes',
       jsonb_build_object('customer', n)
  FROM (VALUES (4, 'completed'), (5, 'busy'), (6, 'in_progress')) AS v(n, status);

INSERT INTO call_events (event_id, event_type, call_id, batch_id, call_status, end_time,
                         payload, event, received_at, trace_id)
SELECT 'evt-' || call_id, 'call_completed', call_id, batch_id, call_status, end_time,
       jsonb_build_object('call_id', call_id, 'call_status', call_status),
       jsonb_build_object('event_type', 'call_completed', 'call_id', call_id,
                          'batch_id', batch_id, 'call_status', call_status),
       now() - interval '49 minutes', '4bf92f3577b34da6a3ce929d0e0e4736'
  FROM call_logs;

INSERT INTO call_outcome_outbox (event_id, call_id, batch_id, call_status, payload, published_at)
VALUES ('evt-call-4', 'call-4', (SELECT min(batch_id) FROM ids), 'completed',
        '{"call_id": "call-4"}', now()),
       ('evt-call-5', 'call-5', (SELECT min(batch_id) FROM ids), 'busy',
        '{"call_id": "call-5"}', NULL);

INSERT INTO do_not_call (phone_number, reason, source)
VALUES ('+33612340008', 'asked not to be called', 'cli'),
       ('+33699999999', 'regulator list', 'import');

INSERT INTO operator_actions (actor, source, role, action, campaign_id, target, rows_affected)
SELECT 'alice', 'console', 'operator', 'campaign.pause', id, jsonb_build_object('name', name), 0
  FROM campaigns WHERE name = 'winter-survey';
"""


def printed_counts(output: str) -> dict[str, str]:
    """The `name|count` lines the check block's query prints."""
    return dict(line.split("|", 1) for line in output.splitlines() if "|" in line)


def snapshot(url: str) -> dict:
    """Every public table's row count and content digest, the migrations, the sequence."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                " ORDER BY table_name"
            )
        ]
        rows = {}
        for table in tables:
            rows[table] = conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
                    " FROM {} AS t"
                ).format(sql.Identifier(table))
            ).fetchone()
        migrations = conn.execute(
            "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version"
        ).fetchall()
        sequence = conn.execute(
            "SELECT last_value, is_called FROM callbridge_batch_id_seq"
        ).fetchone()
    return {"rows": rows, "migrations": migrations, "sequence": sequence}


@pytest.fixture
def databases():
    source, restored = fresh_database_name(), fresh_database_name()
    try:
        yield source, restored
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            for name in (source, restored):
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def test_readme_runbook_backs_up_restores_and_rolls_back(databases, tmp_path):
    source, restored = databases
    source_url, restored_url = database_url(source), database_url(restored)

    migrated = subprocess.run(
        [cli_binary(), "migrate", "up", "--database-url", source_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(source_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(SEED)
    before = snapshot(source_url)
    for table in ("call_logs", "call_batches", "local_call_queue", "call_events",
                  "call_outcome_outbox", "campaigns", "campaign_pacing", "do_not_call",
                  "operator_actions", "_sqlx_migrations"):
        assert before["rows"][table][0] > 0, f"the seed left {table} empty"
    assert before["sequence"] == (3, True), "three batch ids were allocated"

    variables = {
        "CLIENT_CALLING_DB_URL": source_url,
        "BACKUP_FILE": str(tmp_path / "callbridge.dump"),
        "RESTORE_DB": restored,
        "RESTORE_DB_URL": restored_url,
    }
    backed_up = run_block("backup", variables, tmp_path)
    assert Path(variables["BACKUP_FILE"]).stat().st_size > 0
    assert int(backed_up.split()[-1]) == len(before["rows"]), backed_up

    run_block("restore", variables, tmp_path)
    after = snapshot(restored_url)
    assert after["rows"].keys() == before["rows"].keys()
    for table, (count, digest) in before["rows"].items():
        assert after["rows"][table] == (count, digest), f"{table} differs after the restore"
    assert after["migrations"] == before["migrations"]
    assert after["sequence"] == before["sequence"]
    # The restored database works as the services use it: the next batch id moves on.
    with psycopg.connect(restored_url, autocommit=True) as conn:
        (next_id,) = conn.execute("SELECT callbridge_allocate_batch_ids(1)").fetchone()
    with psycopg.connect(source_url, autocommit=True) as conn:
        (source_next_id,) = conn.execute("SELECT callbridge_allocate_batch_ids(1)").fetchone()
    assert next_id == source_next_id

    # The README's check prints the same on the restored database as on the source.
    checked = run_block("check", variables, tmp_path)
    checked_source = run_block("check", {**variables, "RESTORE_DB_URL": source_url}, tmp_path)
    assert checked == checked_source
    status_lines = [line for line in checked.splitlines() if re.match(r"^\d{4} ", line)]
    assert len(status_lines) == len(before["migrations"]), checked
    assert all(" applied " in line for line in status_lines), checked
    counted = printed_counts(checked)
    for table, (count, _) in before["rows"].items():
        assert counted.get(table) == str(count), (table, checked)
    assert counted["callbridge_batch_id_seq"] == str(source_next_id)

    # Rolling the newest migration back, on the restored database.
    rolled_back = run_block(
        "rollback",
        {**variables, "CLIENT_CALLING_DB_URL": restored_url, "ROLLBACK_STEPS": "1"},
        tmp_path,
    )
    assert re.search(rf"^reverted {NEWEST_MIGRATION:04} ", rolled_back, re.MULTILINE), rolled_back
    with psycopg.connect(restored_url, autocommit=True) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM _sqlx_migrations")]
    assert NEWEST_MIGRATION not in versions
    assert max(versions) == NEWEST_MIGRATION - 1
    rechecked = run_block("check", variables, tmp_path)
    assert re.search(rf"^{NEWEST_MIGRATION:04} .* pending$", rechecked, re.MULTILINE), rechecked
    # Rolling back this migration kept every row.
    recounted = printed_counts(rechecked)
    for table, (count, _) in before["rows"].items():
        if table != "_sqlx_migrations":
            assert recounted.get(table) == str(count), (table, rechecked)
