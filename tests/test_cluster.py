"""Work placed on a second (simulated) node: the repository travels there as a git bundle, the
agent's tools act on that node's own clone, and the result comes back as a patch.

Ray's ``cluster_utils.Cluster`` runs two real raylets on this machine; the stagecrew
supervisor is bootstrapped onto it exactly as ``--address`` would.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from conftest import crew, git

from stagecrew.messages import ActorStarted, Notice, SessionFinished, ToolFinished
from stagecrew.orchestrator.eventlog import read_events
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.ray


@pytest.fixture
def two_node_cluster(stagecrew_home: Path):  # type: ignore[no-untyped-def]
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback, no 8.8.8.8 probe
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1"},
    )
    cluster.add_node(num_cpus=1, resources={"far_node": 1}, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


def test_work_on_a_node_without_the_repository_returns_a_patch(
    two_node_cluster: object, git_repo: Path, fault_entry: dict[str, object]
) -> None:
    (git_repo / "notes.txt").write_text("draft\n")  # uncommitted: must travel too
    script = [
        {"tool_calls": [{"name": "bash", "arguments": {"command": "pwd && cat notes.txt"}}]},
        {"tool_calls": [{"name": "mcp__f__cwd", "arguments": {}}]},
        {
            "tool_calls": [
                {
                    "name": "edit",
                    "arguments": {
                        "file_path": "notes.txt",
                        "old_string": "draft",
                        "new_string": "final",
                    },
                }
            ]
        },
        {
            "tool_calls": [
                {
                    "name": "write",
                    "arguments": {"file_path": "new.txt", "content": "made far away\n"},
                }
            ]
        },
        {"text": "Done on the far node."},
    ]
    address = two_node_cluster.address  # type: ignore[attr-defined]
    with ScriptedLLM(script) as llm:
        (git_repo / ".stagecrew").mkdir()
        cfg = {"models": {"primary": {"model": "openai/far", "api_base": llm.base_url}}}
        (git_repo / ".stagecrew" / "config.json").write_text(json.dumps(cfg))
        # An MCP server of a session placed on another node runs there, on the clone.
        (git_repo / ".mcp.json").write_text(json.dumps({"mcpServers": {"f": fault_entry}}))
        git(git_repo, "add", ".mcp.json")
        git(git_repo, "commit", "-qm", "mcp")
        proc = crew(
            "run",
            "Finish the notes.",
            "--address",
            address,
            "--node-resource",
            "far_node",
            "--output-format",
            "json",
            cwd=git_repo,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr
        events = list(read_events(Path(json.loads(proc.stdout)["log"])))

    finished = next(e.body for e in events if isinstance(e.body, SessionFinished))
    assert finished.stop_reason == "done", finished
    # The agent ran on the far node, not where the supervisor lives.
    import ray

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        far = [n["NodeID"] for n in ray.nodes() if n["Resources"].get("far_node")]
    finally:
        ray.shutdown()
    started = next(e.body for e in events if isinstance(e.body, ActorStarted))
    assert started.node_id == far[0]
    mcp = next(e.body for e in events if isinstance(e.body, ActorStarted) and e.body.role == "mcp")
    assert mcp.node_id == far[0]
    pwd, server_cwd = [e.body.content for e in events if isinstance(e.body, ToolFinished)][:2]
    assert "stagecrew-remote-" in pwd and str(git_repo) not in pwd  # the tools used a clone
    assert server_cwd.strip() == pwd.splitlines()[0].strip()  # so did the MCP server
    assert "draft" in pwd  # the uncommitted change travelled in the bundle
    notes = [e.body.text for e in events if isinstance(e.body, Notice)]
    assert any("shipped to node" in n for n in notes)
    assert any("applied the patch" in n for n in notes)
    # The patch came back into the person's working tree.
    assert (git_repo / "notes.txt").read_text() == "final\n"
    assert (git_repo / "new.txt").read_text() == "made far away\n"
    assert git(git_repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
