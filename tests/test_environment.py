"""The environment the suite runs in is the locked one (issue: a fresh machine passes `make test`).

`scripts/venv.sh` installs requirements/dev.lock with hashes checked; these tests prove that what
is installed is exactly that, and that the Node.js peers are pinned by tests/node's lock alone.
`make test-latest` (OPENAPI_MCP_LATEST=1) runs on the newest releases on purpose, so the
Python check is skipped there.
"""

from __future__ import annotations

import json
import os
import re
from importlib.metadata import distributions
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "dev.lock"
NODE = ROOT / "tests" / "node"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked_for_this_machine() -> dict[str, str]:
    """Name -> version of every lock entry whose environment marker holds here."""
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        match = _PIN.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker is None or Marker(marker).evaluate():
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_package_with_hashes() -> None:
    text = LOCK.read_text()
    entries = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert entries and all(_PIN.match(line) for line in entries), [e for e in entries if not _PIN.match(e)]
    # every pin is followed by at least one sha256 hash (pip's --require-hashes needs them)
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if _PIN.match(block.splitlines()[0]))


@pytest.mark.skipif(os.environ.get("OPENAPI_MCP_LATEST") == "1", reason="make test-latest runs unlocked on purpose")
def test_the_installed_packages_are_exactly_the_locked_versions() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    installed.pop("openapi-mcp")  # the project itself (editable)
    installed.pop("pip", None)  # the venv's own installer, not part of the lock
    locked = locked_for_this_machine()
    assert installed == locked, {
        "not locked": sorted(set(installed) - set(locked)),
        "missing": sorted(set(locked) - set(installed)),
        "other version": sorted(n for n in set(installed) & set(locked) if installed[n] != locked[n]),
    }


def test_the_node_peers_install_from_their_lock_alone() -> None:
    """`npm ci` takes exactly what package-lock.json names: exact versions, integrity hashes."""
    manifest = json.loads((NODE / "package.json").read_text())
    lock = json.loads((NODE / "package-lock.json").read_text())
    wanted = {**manifest.get("dependencies", {}), **manifest.get("devDependencies", {})}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", version) for version in wanted.values()), wanted
    assert lock["lockfileVersion"] >= 2 and lock["packages"][""]["devDependencies"] == wanted
    for name, version in wanted.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    unpinned = [path for path, entry in lock["packages"].items()
                if path and not entry.get("link") and not (entry.get("version") and entry.get("integrity"))]
    assert unpinned == []
