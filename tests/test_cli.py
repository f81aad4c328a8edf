import json
import subprocess
import sys

import pytest

COMMANDS = ["demo", "run", "serve", "status", "history", "promote", "rollback", "generate", "redact", "init", "golden", "forget", "reproduce", "purge-raw"]


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
