"""The import layers in pyproject.toml hold, and would catch the upward imports of old.

The second test copies the packages to a temporary tree, puts back two of the imports
the tree had before the layers were drawn (the playback clock building Knowlarity frames
itself, the konnect consumer reaching into the server for its call registry), and checks
that ``lint-imports`` fails on exactly those contracts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "bench",
    "testkit",
    "server",
    "kpi",
    "streamnode",
    "pipeline",
    "wire",
    "audio",
    "config",
)
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_tree_keeps_every_import_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _add_import(path: Path, line: str) -> None:
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    path.write_text(text.replace(marker, marker + "\n" + line + "\n", 1))


def test_the_contracts_fail_on_yesterdays_upward_imports(tmp_path: Path) -> None:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    # As pipeline/playout.py and kpi/service.py were: frames built in the core, and the
    # account API client reading the server's registry.
    _add_import(tmp_path / "pipeline" / "playout.py", "from wire.knowlarity import kill_audio")
    _add_import(tmp_path / "kpi" / "service.py", "from server.state import AppState")
    result = _lint(tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "pipeline.playout -> wire.knowlarity" in out
    assert "kpi.service -> server.state" in out
    flat = " ".join(out.split())  # the report wraps long contract names
    assert "and config below BROKEN" in flat, out  # the layers contract
    assert "telephony wire or adapter BROKEN" in flat, out  # pipeline's forbidden imports
