"""``crew memory [show|search QUERY|edit]``: the person's view of what stagecrew remembers.

``show`` answers "which layer holds what, and where is the file": the project ``MEMORY.md``
with its sections, how many entries each holds and whose they are (the writer's or the
person's; see ``ProjectMemoryWriter``), the global ``MEMORY.md``, the instruction files in
prompt order, and the latest session's checkpoint and notes. ``search`` runs the same search
the agent's ``memory`` tool runs, over the same index, after the same sync of the markdown
layers, so what the person finds is what a model would find. ``edit`` opens the project
``MEMORY.md`` in ``$VISUAL``/``$EDITOR``; what the person writes there stays theirs.

Reads only files under the project and the user config dir: no Ray head, no model, and it
works while a session runs (the index is SQLite; the markdown files are replaced atomically).
Exit codes: 0 done, 1 nothing found / the editor failed, 2 usage.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

memory_app = typer.Typer(
    name="memory",
    help="See, search and edit what stagecrew remembers about this project.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _project(cwd: Path | None = None) -> Path:
    from stagecrew.config import find_project_root

    return find_project_root(cwd or Path.cwd())


def _paths(workspace: Path) -> Any:
    from stagecrew.config import user_config_dir
    from stagecrew.memory.layers import MemoryPaths

    return MemoryPaths(workspace, None, user_config_dir())


def _latest_session_dir(workspace: Path) -> Path | None:
    """The session a person most likely means: the newest one with a log, else the newest
    directory (a session killed before its first event still has its files)."""
    from stagecrew.cli.runner import latest_session
    from stagecrew.layout import session_dir, sessions_dir

    sid = latest_session(workspace)
    if sid is not None:
        return session_dir(workspace, sid)
    try:
        dirs = [d for d in sessions_dir(workspace).iterdir() if d.is_dir()]
    except OSError:
        return None
    return max(dirs, key=lambda d: d.stat().st_mtime, default=None)


def _file(path: Path) -> dict[str, Any]:
    exists = path.is_file()
    return {"path": str(path), "exists": exists, "bytes": path.stat().st_size if exists else 0}


def memory_report(workspace: Path, home: Path | None = None) -> dict[str, Any]:
    """Everything ``show`` prints, as data (also what ``--json`` prints)."""
    from stagecrew.memory.instructions import load_instructions
    from stagecrew.memory.layers import ProjectMemoryWriter

    paths = _paths(workspace)
    census = ProjectMemoryWriter(paths.project_memory).census()
    project = _file(paths.project_memory) | {
        "sections": [
            {"name": name, "entries": mine + theirs, "writer": mine, "yours": theirs}
            for name, (mine, theirs) in census.items()
        ]
        if paths.project_memory.is_file()
        else []
    }
    found = load_instructions(workspace, home=home, config_dir=paths.user_config_dir)
    instructions = [
        {"label": s.label, "path": str(s.path), "kind": s.describe(), "bytes": s.size_bytes}
        for s in found.sources
    ]
    session: dict[str, Any] | None = None
    sdir = _latest_session_dir(workspace)
    if sdir is not None:
        session = {
            "id": sdir.name,
            "checkpoint": _file(sdir / "checkpoint.md"),
            "notes": _file(sdir / "notes.md"),
            "tasks": _file(sdir / "tasks" / "ledger.json"),
        }
    return {
        "project": workspace.as_posix(),
        "project_memory": project,
        "global_memory": _file(paths.global_memory),
        "instructions": instructions,
        "instruction_notices": list(found.notices),
        "latest_session": session,
        "index": _file(paths.index_db),
    }


def _size(info: dict[str, Any]) -> str:
    return f"{info['bytes']:,} bytes" if info["exists"] else "not written yet"


def _print_report(report: dict[str, Any]) -> None:
    pm = report["project_memory"]
    print(f"project memory  {pm['path']}  ({_size(pm)})")
    for sec in pm["sections"]:
        whose = f"{sec['writer']} saved by agents, {sec['yours']} yours" if sec["entries"] else ""
        print(f"  ## {sec['name']}: {sec['entries']} entries" + (f" ({whose})" if whose else ""))
    gm = report["global_memory"]
    print(f"global memory   {gm['path']}  ({_size(gm)})")
    print("instruction files (in prompt order)")
    if not report["instructions"]:
        print("  none: add AGENTS.md or CLAUDE.md to the project")
    for item in report["instructions"]:
        print(f"  {item['label']}  {item['path']}  ({item['kind']}, {item['bytes']:,} bytes)")
    for notice in report["instruction_notices"]:
        print(f"  ! {notice}")
    session = report["latest_session"]
    if session is None:
        print("latest session  none yet")
    else:
        print(f"latest session  {session['id']}")
        for key in ("checkpoint", "notes", "tasks"):
            print(f"  {key}: {session[key]['path']}  ({_size(session[key])})")
    print(f"search index    {report['index']['path']}  ({_size(report['index'])})")


@memory_app.command("show")
def show(as_json: JsonOpt = False) -> None:
    """Which layer holds what, and the path of each file."""
    report = memory_report(_project())
    if as_json:
        print(json.dumps(report))
    else:
        _print_report(report)
    raise typer.Exit(EXIT_OK)


def search_memory(
    workspace: Path, query: str, limit: int = 8, kinds: list[str] | None = None
) -> list[dict[str, Any]]:
    """Sync the markdown layers into the project's index (as the ``memory`` tool does before
    every search), then search it; hits as data with where each came from."""
    from stagecrew.memory.index import MemoryIndex

    paths = _paths(workspace)
    index = MemoryIndex(paths.index_db)
    try:
        index.sync_files(paths.sources())
        hits = index.search(query, limit=limit, kinds=kinds)
    finally:
        index.close()
    out = []
    for hit in hits:
        source = hit.source
        if not source.startswith("session:") and Path(source).is_relative_to(workspace):
            source = str(Path(source).relative_to(workspace))
        out.append(
            {
                "kind": hit.kind,
                "source": source,
                "session": hit.session,
                "heading": hit.heading,
                "snippet": " ".join(hit.snippet.split()) or hit.text[:200],
                "score": round(hit.score, 4),
            }
        )
    return out


@memory_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="Words, identifiers, paths, flags or ports.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=50)] = 8,
    kind: Annotated[
        list[str] | None, typer.Option("--kind", help="Only this source kind (repeatable).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search project memory, checkpoints, notes, task progress and archived conversation."""
    from stagecrew.memory.layers import SOURCE_KINDS

    bad = [k for k in kind or [] if k not in SOURCE_KINDS]
    if bad:
        typer.echo(
            f"crew: unknown kind {bad[0]!r}; use any of: {', '.join(SOURCE_KINDS)}", err=True
        )
        raise typer.Exit(EXIT_USAGE)
    if not query.strip():
        typer.echo("crew: memory search needs a query", err=True)
        raise typer.Exit(EXIT_USAGE)
    workspace = _project()
    hits = search_memory(workspace, query, limit, kind or None)
    if as_json:
        print(json.dumps({"query": query, "hits": hits}))
    elif not hits:
        print(f"nothing in memory matches {query!r}")
    else:
        for i, hit in enumerate(hits, 1):
            session = f" · session {hit['session']}" if hit["session"] else ""
            print(f"{i}. [{hit['kind']}{session} · {hit['source']} · {hit['heading']}]")
            print(f"   {hit['snippet']}")
    raise typer.Exit(EXIT_OK if hits else EXIT_FAILED)


def _editor() -> list[str]:
    for var in ("VISUAL", "EDITOR"):
        value = os.environ.get(var, "").strip()
        if value:
            return shlex.split(value)
    return ["vi"]


@memory_app.command("edit")
def edit() -> None:
    """Open the project MEMORY.md in $VISUAL/$EDITOR (created with its sections if missing).

    Lines you write there are yours: the memory writer never removes them."""
    from stagecrew.memory.layers import ProjectMemory, atomic_write_text

    path = _paths(_project()).project_memory
    if not path.is_file():
        atomic_write_text(path, ProjectMemory().render())
    try:
        code = subprocess.call([*_editor(), str(path)])
    except OSError as exc:
        typer.echo(f"crew: could not start the editor: {exc} (set $EDITOR)", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    raise typer.Exit(EXIT_OK if code == 0 else EXIT_FAILED)
