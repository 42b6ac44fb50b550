"""A non-editable install must carry conf/: build the wheel and look inside."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_every_config_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("archselect-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    conf = ROOT / "archselect" / "conf"
    expected = {f"archselect/conf/{p.relative_to(conf)}" for p in conf.rglob("*.yaml")}
    assert expected and expected <= names
    assert "archselect/conf/__init__.py" in names
    assert "archselect/cli.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "archselect = archselect.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
