"""``runtime.namespace``: the supervisor of one person on a cluster is not another's. Two
namespaces on one Ray head get two supervisors (each with its own control endpoint); the same
namespace finds the same one again."""

from __future__ import annotations

import pytest

from stagecrew.orchestrator import runtime

pytestmark = pytest.mark.ray


def test_namespaces_get_their_own_supervisor(ray_head: object) -> None:
    record = runtime.read_record()
    assert record is not None and record.namespace == "stagecrew"
    mine = runtime.read_record().client().ping()  # type: ignore[union-attr]
    other = runtime.connect(record.gcs_address, namespace="stagecrew-other", pool_size=0)
    again = runtime.connect(record.gcs_address, namespace="stagecrew-other", pool_size=0)
    theirs = other.ping()
    assert theirs["pid"] != mine["pid"]
    assert (other.port, other.token) == (again.port, again.token)


def test_the_namespace_defaults_per_person_on_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.NAMESPACE_VAR, raising=False)
    monkeypatch.setenv("USER", "ada")
    monkeypatch.setenv("LOGNAME", "ada")
    assert runtime.resolve_namespace(None, local=True) == "stagecrew"
    assert runtime.resolve_namespace(None, local=False) == "stagecrew-ada"
    assert runtime.resolve_namespace("team", local=False) == "team"
    monkeypatch.setenv(runtime.NAMESPACE_VAR, "from-env")
    assert runtime.resolve_namespace(None, local=False) == "from-env"
