"""The DVC remote on S3-compatible storage: moto's S3 server on loopback stands in for S3 or
MinIO. The nightly flow's version step pushes a cycle's data there, and a fresh clone of the
workspace pulls the same bytes back."""

import datetime as dt
import subprocess
import sys
import time
import urllib.request

import pytest

from flows import workspace as wsp
from tests.conftest import free_port, write_tiny_params

BUCKET = "nightshift-data"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """`moto_server` (S3 API) on 127.0.0.1, with a bucket; its endpoint URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def aws_env(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "nightshift", "AWS_SECRET_ACCESS_KEY": "nightshift",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)


def s3_workspace(path, s3_endpoint: str, bucket: str, prefix: str):
    """A new workspace at `path` whose DVC remote is `s3://bucket/prefix` on the S3 server; returns
    it and a boto3 client of that server."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    ws = wsp.init(path)
    write_tiny_params(ws / "params.yaml", **{"version.remote": "s3",
                                             "version.remote_url": f"s3://{bucket}/{prefix}",
                                             "version.endpoint_url": s3_endpoint})
    return ws, s3


def test_the_version_step_pushes_to_s3_and_a_fresh_clone_pulls_the_same_data(tmp_path, s3_endpoint, aws_env):
    from flows.tasks import version

    ws, s3 = s3_workspace(tmp_path / "workspace", s3_endpoint, BUCKET, "nightshift")
    snapshot = ws / "data/snapshots/2026-01-05.jsonl"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b'{"id": "a", "messages": [{"role": "user", "content": "hi \xc3\xa9"}]}\n')
    wsp.dvc(ws, "add", "-q", str(snapshot.relative_to(ws)))

    versioned = version.fn(ws, dt.date(2026, 1, 5))  # the flow's task, as the cycle calls it

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="nightshift/")["Contents"]]
    md5 = versioned["data_version"]
    assert any(k.endswith(md5[2:]) for k in keys), keys
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ws), str(clone)], check=True)
    assert not (clone / "data/snapshots/2026-01-05.jsonl").exists()
    # The default remote, as on a new machine; the .dvc files (no stage of dvc.yaml has run here).
    tracked = sorted(clone.rglob("*.jsonl.dvc"))
    fetched = wsp.dvc(clone, "pull", *(str(f.relative_to(clone)) for f in tracked))
    assert f"{len(tracked)} files fetched" in fetched
    for dvc_file in tracked:  # every tracked file came back from S3 byte for byte
        data = dvc_file.with_suffix("")
        assert data.read_bytes() == (ws / data.relative_to(clone)).read_bytes(), data


def test_an_endpoint_without_a_bucket_is_a_clear_error(params, replace):
    from pipelines.common import params as params_mod

    with pytest.raises(params_mod.ParamsError, match="remote_url"):
        replace(params.version, endpoint_url="http://127.0.0.1:9000")
