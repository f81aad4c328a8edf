import subprocess
import sys

import pytest

COMMANDS = ["demo", "run", "status", "history", "promote", "rollback", "generate", "redact", "init"]


def nightshift(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    out = nightshift(command, "--help")
    assert out.returncode == 0 and "usage: nightshift " + command in out.stdout


def test_top_level_help_lists_the_commands():
    out = nightshift("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in COMMANDS)


def test_outside_a_workspace_the_error_says_what_to_do(tmp_path):
    out = nightshift("status", "--workspace", str(tmp_path))
    assert out.returncode != 0 and "nightshift init" in out.stderr


def test_init_creates_a_git_and_dvc_workspace_and_refuses_to_overwrite_it(tmp_path):
    out = nightshift("init", str(tmp_path / "ws"))
    assert out.returncode == 0, out.stderr
    for path in ("params.yaml", "dvc.yaml", ".dvc/config", ".git", "pipelines/train.py"):
        assert (tmp_path / "ws" / path).exists(), path
    again = nightshift("init", str(tmp_path / "ws"))
    assert again.returncode != 0 and "already" in again.stderr
