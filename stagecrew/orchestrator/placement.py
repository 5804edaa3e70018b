"""Running a session's agent on another node of the cluster.

``--node-resource R`` runs the agent on a node with Ray resource R: the working tree is
bundled (``remote_workspace.py``), cloned there, and the agent's changes come back as a patch
applied to the person's tree after a rewind snapshot. The supervisor and the session's
services stay on the node that holds the person's workspace.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from stagecrew.actors.spec import AgentSpec
from stagecrew.messages import Notice
from stagecrew.orchestrator import remote_workspace as rw
from stagecrew.orchestrator.eventlog import session_dir
from stagecrew.orchestrator.hosts import start_agent_host
from stagecrew.orchestrator.sessions import EventHub, SessionRuntime


async def place_remotely(
    hub: EventHub, session: SessionRuntime, spec: AgentSpec, resource: str
) -> tuple[AgentSpec, Any]:
    """Ship the workspace to a node with ``resource`` and start a host there; returns the
    spec pointed at the clone, and the host."""
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get(resource, 0) > 0]
    if not nodes:
        raise ValueError(f"no live node has the resource '{resource}'")
    node_id = nodes[0]["NodeID"]
    pinned = NodeAffinitySchedulingStrategy(node_id, soft=False)
    loop = asyncio.get_running_loop()
    bundle, commit = await loop.run_in_executor(None, rw.bundle_workspace, session.workspace)
    materialise = ray.remote(num_cpus=0)(rw.materialise).options(scheduling_strategy=pinned)
    path = await materialise.remote(ray.put(bundle), commit)
    session.remote_node, session.remote_path, session.remote_base = node_id, path, commit
    await hub.emit(
        session,
        Notice(text=f"workspace shipped to node {node_id[:12]} as a {len(bundle):,}-byte bundle"),
    )
    remote_spec = spec.model_copy(
        update={"workspace": path, "session_dir": str(session_dir(path, session.session))}
    )
    return remote_spec, start_agent_host(scheduling_strategy=pinned)


async def bring_back_patch(hub: EventHub, session: SessionRuntime) -> None:
    """The remote agent's work, as a patch applied to the person's tree (after a snapshot)."""
    from stagecrew.oneline import one_line
    from stagecrew.rewind import take_point
    from stagecrew.tools.worktrees import apply_patch_to

    assert session.remote_node and session.remote_path and session.remote_base
    pinned = NodeAffinitySchedulingStrategy(session.remote_node, soft=False)
    patch_task = ray.remote(num_cpus=0)(rw.patch_since).options(scheduling_strategy=pinned)
    patch = await patch_task.remote(session.remote_path, session.remote_base)
    remove_task = ray.remote(num_cpus=0)(rw.remove).options(scheduling_strategy=pinned)
    await remove_task.remote(session.remote_path)
    loop = asyncio.get_running_loop()
    try:
        point = await loop.run_in_executor(
            None,
            partial(
                take_point,
                session.workspace,
                session=session.session,
                tool="remote patch",
                label=f"before applying the patch from node {session.remote_node[:12]}",
            ),
        )
        undo = f"rewind point {point.id}: crew rewind --to {point.id}"
    except Exception as exc:  # the snapshot apply_patch_to takes still protects the tree
        undo = f"no rewind point: {one_line(exc)}"
    try:
        applied = await loop.run_in_executor(
            None, partial(apply_patch_to, Path(session.workspace), patch, label="remote work")
        )
        text = (
            f"applied the patch from node {session.remote_node[:12]} "
            f"({len(patch.encode()):,} bytes; rewind snapshot {applied.snapshot_id}; {undo})"
        )
        await hub.emit(session, Notice(text=text))
    except Exception as exc:
        await hub.emit(
            session, Notice(level="error", text=f"the remote patch did not apply: {exc}")
        )
