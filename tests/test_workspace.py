"""The workspace's clean-up after a killed cycle, with real git processes."""

import subprocess

from flows import workspace as wsp


def git_repo(path):
    path.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "f.txt").write_text("one\n")
    return path


def test_a_git_lock_left_by_a_killed_commit_is_removed_and_the_next_commit_works(tmp_path):
    ws = git_repo(tmp_path / "ws")
    (ws / ".git/index.lock").write_text("")  # what a `git commit` killed half-way leaves
    blocked = subprocess.run(["git", "add", "-A"], cwd=ws, capture_output=True, text=True)
    assert blocked.returncode != 0 and "index.lock" in blocked.stderr

    assert wsp.clear_stale_git_lock(ws) == str(ws / ".git/index.lock")

    wsp.git(ws, "add", "-A")
    wsp.git(ws, "commit", "-q", "-m", "after the crash")
    assert wsp.clear_stale_git_lock(ws) is None  # nothing left to clear


def test_a_git_lock_is_left_alone_while_a_git_process_works_in_the_workspace(tmp_path):
    ws = git_repo(tmp_path / "ws")
    (ws / ".git/index.lock").write_text("")
    # A long-running git command in the workspace (it waits for object names on stdin).
    running = subprocess.Popen(["git", "cat-file", "--batch"], cwd=ws, stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL)
    try:
        assert wsp.clear_stale_git_lock(ws) is None
        assert (ws / ".git/index.lock").exists()
    finally:
        running.communicate(b"")
    assert wsp.clear_stale_git_lock(ws) is not None
