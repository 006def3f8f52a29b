"""Provenance: how a figure was made, as a JSON file beside it and a disclosure under it."""

from __future__ import annotations

import html
import json
import subprocess
from pathlib import Path
from typing import Any

from pelican_figgen import contract

from .cache import Record

HASH_SHOWN = 12  # hex digits of a hash the page shows; the JSON keeps all 64


def source_commit(root: Path) -> dict[str, Any]:
    """The commit checked out at root and whether the tree had uncommitted changes."""
    # Asked at each run (a few ms), not once per process: the tree changes between builds.
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        except OSError:  # no git on this machine
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain")) if commit else False
    return {"commit": commit, "dirty": dirty}


def record_json(record: Record, script: str) -> str:
    """The provenance JSON published beside a figure's image, run time included.

    The run time is the one value that differs between two builds of the same sources on the
    same machine; the images and the HTML stay byte-identical (the page leaves it out).
    """
    params = json.loads(record.params)
    data = {
        "figure": record.name,
        "script": script,
        "inputs": dict(sorted(record.inputs.items())),
        "seed": params["seed"],
        "params": params["params"],
        "versions": dict(record.environment),
        "image": record.image.sha256,
        **({"assets": {k: a.sha256 for k, a in sorted(record.assets.items())}}
           if record.assets else {}),
        **({"webp": record.image.webp} if record.image.webp else {}),
        # Each other render by the kind of its file (WebP: "webp"), as the image is named.
        **({"renders": {k: {r.suffix.lstrip("."): r.sha256}
                        for k, r in sorted(record.renders.items())}} if record.renders else {}),
        "seconds": record.seconds,
        **record.provenance,
    }
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def disclosure_html(record: Record, script: str, json_url: str) -> str:
    """A <details> saying how the figure was made; nothing in it varies between builds."""
    params = json.loads(record.params)
    # Everything shown comes from a record or a setting: escaped, like any text from a run.
    inputs = "".join(
        f"<li><code>{html.escape(path)}</code> {_hash_html(digest)}</li>"
        # Sorted, the script first: a record just made lists them in another order than one read.
        for path, digest in sorted(record.inputs.items(), key=lambda kv: (kv[0] != script, kv[0]))
    )
    # Not libraries: the thread count (below), a draft's mark (its note says so, not feeds).
    versions = ", ".join(f"{k} {v}" for k, v in sorted(record.environment.items())
                         if k not in ("threads", contract.DRAFTED))
    setting = f"seed {html.escape(str(params['seed']))}"
    if "threads" in record.environment:
        setting += f", {html.escape(record.environment['threads'])} compute thread(s)"
    if params["params"]:
        setting += f", parameters <code>{html.escape(json.dumps(params['params']))}</code>"
    rows = [
        ("Inputs (script first) and their SHA-256", f"<ul>{inputs}</ul>"),
        ("Seed and parameters", setting),
        ("Libraries", html.escape(versions)),
        ("Device", html.escape(str(record.provenance.get("device", "unknown")))),
        ("Source commit", _commit_html(record.provenance)),
    ]
    items = "".join(f"<dt>{term}</dt><dd>{value}</dd>" for term, value in rows)
    link = f'<a href="{html.escape(json_url, quote=True)}">full record (JSON)</a>'
    return (
        '  <details class="figgen-provenance">\n'
        "    <summary>How this figure was made</summary>\n"
        f"    <dl>{items}</dl>\n    <p>{link}</p>\n"
        "  </details>\n"
    )


def _commit_html(provenance: Any) -> str:
    """The commit, marked when the tree had uncommitted changes."""
    commit = provenance.get("commit")
    if not commit:
        return "unknown (not built from a git checkout)"
    mark = ' <strong class="figgen-dirty">with uncommitted changes</strong>' \
        if provenance.get("dirty") else ""
    return f"{_hash_html(commit)}{mark}"


def _hash_html(digest: str) -> str:
    """A hash, shortened, marked so the stylesheet keeps it on one line."""
    return f'<code class="figgen-hash">{html.escape(digest[:HASH_SHOWN])}</code>'
