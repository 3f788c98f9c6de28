"""The SQL the deployment runs against the real schema: the submitter's KEDA query and the
compose demo campaign, each executed on a freshly migrated database on the shared
Postgres (CALLBRIDGE_TEST_PG, default postgres://postgres@127.0.0.1:5432/postgres)."""

from __future__ import annotations

import os

import psycopg
import pytest
from psycopg import sql

from deploy_support import DEPLOY, OVERLAYS, REPO, compose_model, fresh_database_name, objects

ADMIN_URL = os.environ.get("CALLBRIDGE_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")
DEMO_CAMPAIGN = DEPLOY / "compose" / "demo-campaign.sql"


def apply_migrations(conn: psycopg.Connection) -> None:
    """Every `migrations/NNNN_*.up.sql`, in order, each in its own transaction as sqlx
    applies them (`callbridge migrate up`)."""
    ups = sorted((REPO / "migrations").glob("*.up.sql"), key=lambda p: int(p.name.split("_")[0]))
    assert ups, "no migrations"
    for path in ups:
        script = path.read_text()
        if script.lstrip().startswith("-- no-transaction"):
            conn.execute(script)
        else:
            with conn.transaction():
                conn.execute(script)


@pytest.fixture
def migrated_db():
    name = fresh_database_name()
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(ADMIN_URL, dbname=name, autocommit=True) as conn:
            apply_migrations(conn)
            yield conn
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def keda_query(overlay: str) -> str:
    (query,) = [
        trigger["metadata"]["query"]
        for scaled in objects(overlay, "ScaledObject")
        for trigger in scaled["spec"]["triggers"]
        if trigger["type"] == "postgresql"
    ]
    return query


def count(conn: psycopg.Connection, query: str) -> int:
    (value,) = conn.execute(query).fetchone()
    return value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_submitter_keda_query_counts_exactly_the_due_pending_rows(migrated_db, overlay):
    rows = [
        # (queue_status, next attempt relative to now, counted?)
        ("pending", "-1 minute", True),
        ("pending", "-1 day", True),
        ("pending", "0 seconds", True),
        ("pending", "+5 minutes", False),  # waiting out a retry's backoff
        ("submitting", "-1 minute", False),  # leased by a replica
        ("submitted", "-1 minute", False),
        ("failed", "-1 minute", False),
        ("needs_review", "-1 minute", False),
    ]
    with migrated_db.transaction():
        for index, (status, offset, _) in enumerate(rows):
            migrated_db.execute(
                "INSERT INTO local_call_queue (phone_number, batch_id, queue_status, next_attempt_at)"
                " VALUES (%s, 1, %s, now() + %s::interval)",
                (f"90000000{index:02d}", status, offset),
            )
    assert count(migrated_db, keda_query(overlay)) == sum(counted for *_, counted in rows)


def test_demo_campaign_queues_two_batches_once_and_all_of_it_is_due(migrated_db):
    script = DEMO_CAMPAIGN.read_text()
    migrated_db.execute(script)
    queued = migrated_db.execute(
        "SELECT batch_id, count(*) FROM local_call_queue WHERE campaign_key = 'compose-demo'"
        " GROUP BY batch_id ORDER BY batch_id"
    ).fetchall()
    assert queued == [(900001, 100), (900002, 100)]
    # It is a campaign the operator controls steer: its batches and rows point at it.
    linked = migrated_db.execute(
        "SELECT (SELECT count(*) FROM local_call_queue q JOIN campaigns c ON c.id = q.campaign_id"
        "        WHERE c.name = 'compose-demo'),"
        "       (SELECT count(*) FROM call_batches b JOIN campaigns c ON c.id = b.campaign_id"
        "        WHERE c.name = 'compose-demo')"
    ).fetchone()
    assert linked == (200, 2)
    # A second `docker compose up` runs it again: nobody is queued (and dialled) twice.
    migrated_db.execute(script)
    assert count(migrated_db, "SELECT count(*) FROM local_call_queue") == 200
    assert count(migrated_db, "SELECT count(DISTINCT phone_number) FROM local_call_queue") == 200
    assert count(migrated_db, "SELECT count(*) FROM campaigns") == 1
    # Everything is due at once, so the submitter (and KEDA) see the whole campaign.
    assert count(migrated_db, keda_query("staging")) == 200
    # The batches belong to the account the simulator calls back for.
    services = compose_model()["services"]
    account = services["sim"]["environment"]["SIM_ACCOUNT_CODE"]
    assert services["ingress"]["environment"]["CENTRALIZED_CALLING_ACCOUNT_CODE"] == account
    accounts = migrated_db.execute("SELECT DISTINCT accountcode FROM call_batches").fetchall()
    assert accounts == [(account,)]
