"""The production overlay's broker and database: a 3-node RabbitmqCluster (RabbitMQ
Cluster Operator) and a 3-instance CloudNativePG Cluster with synchronous replication,
validated offline against the schemas in deploy/schemas/ (a hand-written subset of each
operator's CRD: no registry package ships them), and checked for the settings the
"a 200 is never lost" promise rests on."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from deploy_support import DEPLOY, objects

SCHEMAS = DEPLOY / "schemas"
RABBITMQ_SCHEMA = json.loads((SCHEMAS / "rabbitmqcluster.rabbitmq.com-v1beta1.json").read_text())
CNPG_SCHEMA = json.loads((SCHEMAS / "cluster.postgresql.cnpg.io-v1.json").read_text())


def only(overlay: str, kind: str) -> dict:
    found = objects(overlay, kind)
    assert len(found) == 1, f"{overlay}: {len(found)} {kind} objects"
    return found[0]


def validate(doc: dict, schema: dict) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def test_the_rabbitmq_cluster_has_three_replicas_and_passes_its_schema():
    cluster = only("production", "RabbitmqCluster")
    validate(cluster, RABBITMQ_SCHEMA)
    spec = cluster["spec"]
    # callbridge's quorum queues are created with 3 members: one per node.
    assert spec["replicas"] == 3
    config = spec["rabbitmq"]["additionalConfig"]
    assert "cluster_partition_handling = pause_minority" in config
    anti = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    assert anti[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == cluster["metadata"]["name"]


def test_the_postgres_cluster_replicates_synchronously_and_passes_its_schema():
    cluster = only("production", "Cluster")
    validate(cluster, CNPG_SCHEMA)
    spec = cluster["spec"]
    assert spec["instances"] == 3
    synchronous = spec["postgresql"]["synchronous"]
    assert synchronous["number"] >= 1 and synchronous["number"] < spec["instances"]
    assert synchronous["dataDurability"] == "required"
    # The persister acknowledges after its commit returns; `off`/`local` would return first.
    assert spec["postgresql"]["parameters"]["synchronous_commit"] in {"on", "remote_apply"}
    assert spec["bootstrap"]["initdb"]["database"] == "client_calling_db"


def test_staging_runs_neither_cluster():
    assert objects("staging", "RabbitmqCluster") == []
    assert objects("staging", "Cluster") == []


@pytest.mark.parametrize(
    ("kind", "schema", "path", "value"),
    [
        ("RabbitmqCluster", RABBITMQ_SCHEMA, ("spec", "replica"), 3),
        ("RabbitmqCluster", RABBITMQ_SCHEMA, ("spec", "replicas"), "three"),
        ("Cluster", CNPG_SCHEMA, ("spec", "postgresql", "synchronous", "method"), "all"),
        ("Cluster", CNPG_SCHEMA, ("spec", "postgresql", "synchronous", "numbr"), 1),
        ("Cluster", CNPG_SCHEMA, ("spec", "instance"), 3),
    ],
)
def test_the_schemas_reject_a_misspelt_or_mistyped_field(kind, schema, path, value):
    broken = copy.deepcopy(only("production", kind))
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, schema)
