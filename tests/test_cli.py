import json
import subprocess
import sys

import pytest

COMMANDS = ["demo", "run", "serve", "status", "history", "promote", "rollback", "generate", "redact", "init", "golden", "forget", "reproduce", "purge-raw", "rebase", "base", "serve-model", "canary"]


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
    for path in ("params.yaml", "dvc.yaml", ".dvc/config", ".git", "pipelines/model/train.py"):
        assert (tmp_path / "ws" / path).exists(), path
    again = nightshift("init", str(tmp_path / "ws"))
    assert again.returncode != 0 and "already" in again.stderr


@pytest.mark.slow
def test_golden_add_redacts_validates_versions_and_commits_and_refuses_bad_records(tmp_path):
    ws = tmp_path / "ws"
    assert nightshift("init", str(ws)).returncode == 0
    golden = ws / "data/golden/golden.jsonl"
    before = golden.read_text().splitlines()
    assert (ws / "data/golden/golden.jsonl.dvc").exists()  # DVC-versioned from the start

    good = {"id": "ticket-9", "timestamp": "2026-01-05T10:00:00Z", "feedback": None,
            "messages": [{"role": "user", "content": "Mail me at ann.lee@example.com: where is order #123456?"},
                         {"role": "assistant", "content": "Order #123456 ships today."}],
            "metadata": {"expect": "#123456"}}
    bad = {**good, "id": "ticket-10", "messages": [{"role": "robot", "content": "beep"}]}
    (tmp_path / "bad.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    refused = nightshift("golden", "add", str(tmp_path / "bad.jsonl"), "--reason", "x", "--workspace", str(ws))
    assert refused.returncode != 0 and "ticket-10: unknown_role" in refused.stderr
    assert golden.read_text().splitlines() == before

    (tmp_path / "good.jsonl").write_text(json.dumps(good) + "\n")
    added = nightshift("golden", "add", str(tmp_path / "good.jsonl"), "--reason", "order questions",
                       "--workspace", str(ws))
    assert added.returncode == 0, added.stderr
    after = golden.read_text().splitlines()
    assert len(after) == len(before) + 1
    record = json.loads(after[-1])
    assert "ann.lee@example.com" not in after[-1] and "<EMAIL_ADDRESS_1>" in after[-1]
    assert record["metadata"]["added_as"] == "ticket-9" and record["metadata"]["expect"] == "#123456"
    log = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=ws, capture_output=True, text=True)
    assert log.stdout.strip() == "golden set: add 1 record(s): order questions"
    dvc_status = subprocess.run([sys.executable, "-m", "dvc", "status", "data/golden/golden.jsonl.dvc"],
                                cwd=ws, capture_output=True, text=True)
    assert "up to date" in dvc_status.stdout  # the .dvc file matches the new content

    again = nightshift("golden", "add", str(tmp_path / "good.jsonl"), "--reason", "x", "--workspace", str(ws))
    assert again.returncode == 0 and "already in the golden set" in again.stdout


def all_commands():
    """(words after `nightshift`, the click command) for every command and group of the app."""
    from typer.main import get_command

    from flows.cli import app

    found, todo = [], [((), get_command(app))]
    while todo:
        path, cmd = todo.pop(0)
        found.append((path, cmd))
        todo += [((*path, name), sub) for name, sub in getattr(cmd, "commands", {}).items()]
    return found[1:]


def flat(text):
    return " ".join(text.split())


def test_the_tests_here_cover_every_command():
    names = [" ".join(path) for path, _ in all_commands()]
    assert sorted(n for n in names if " " not in n) == sorted(COMMANDS)
    assert "golden add" in names and "base build" in names


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in all_commands()])
def test_help_says_what_the_command_does_and_every_option_with_its_help(path, capsys):
    from flows import cli

    cmd = dict((" ".join(p), c) for p, c in all_commands())[path]
    with pytest.raises(SystemExit) as done:
        cli.main([*path.split(), "--help"])
    assert done.value.code == 0
    out = flat(capsys.readouterr().out)
    assert out.startswith(f"usage: nightshift {path} ")
    assert cmd.help and flat(cmd.help) in out  # the docstring
    for param in cmd.params:
        assert param.help, f"{path}: {param.name} has no help"
        assert flat(param.help) in out
        if param.param_type_name == "option":
            assert all(opt in out for opt in param.opts)


def test_workspace_option_is_declared_once_and_shared():
    import typing
    from pathlib import Path

    from flows.cli import base

    sources = "".join(p.read_text() for p in Path(base.__file__).parent.glob("*.py"))
    assert sources.count("workspace directory (default: .)") == 1
    takers = []
    for path, cmd in all_commands():
        if cmd.callback is None or "workspace" not in [p.name for p in cmd.params]:
            continue
        hint = typing.get_type_hints(cmd.callback.__wrapped__, include_extras=True)["workspace"]
        takers.append(" ".join(path))
        if path != ("demo",):  # the demo keeps its own workspace, demo/
            assert hint == base.Workspace, path
    assert len(takers) == 16  # all but redact and init


@pytest.mark.parametrize("argv", [["rollback"], ["forget", "--reason", "x"],
                                  ["forget", "--reason", "x", "--user-id", "u", "--match", "m"],
                                  ["history", "--alias", "nobody"], ["demo", "--cycles", "many"],
                                  ["no-such-command"], []])
def test_usage_errors_exit_2_with_the_usage_line(argv, capsys):
    from flows import cli

    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "usage: nightshift" in err and "Error:" in err


def test_a_failure_exits_with_its_message(tmp_path):
    from flows import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["status", "--workspace", str(tmp_path)])
    assert "is not a nightshift workspace" in done.value.code and "nightshift init" in done.value.code
