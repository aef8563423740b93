"""The kit's set-up: CLI wiring, environment.yml in step with pyproject.toml, CI runs the README command."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from qparse_lite.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_every_dependency():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in meta["dependencies"]}
    for extra in ("notebooks", "dev", "book"):
        wanted |= {_name(r) for r in meta["optional-dependencies"][extra]}
    env = (REPO / "environment.yml").read_text()
    listed = {_name(m.group(1)) for m in re.finditer(r"^\s+- ([A-Za-z0-9_.\-\[\]]+[^\n]*)$", env, re.M)}
    missing = wanted - listed
    assert not missing, f"environment.yml lacks {sorted(missing)}"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make reproduce" in readme
    ci = (REPO / ".ci/run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("cmd", _subcommands())
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: qparse" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "qparse_lite", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "reproduce" in out.stdout


def test_atomic_writes_get_normal_permissions_and_leave_no_temp_files(tmp_path):
    import os

    from qparse_lite.io import atomic_path, atomic_write_text

    p = atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~mask
    try:
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    except RuntimeError:
        pass
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]
