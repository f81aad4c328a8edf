"""Shared fixtures: offline settings, tiny params, a tiny pre-trained base model, and real servers
on loopback: a private PostgreSQL (Debian's binaries) and `mlflow server` on SQLite or PostgreSQL."""

import contextlib
import dataclasses
import datetime as dt
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

# Under pytest-xdist (`make test` runs two workers), each worker and the stage processes it starts
# get their share of the cores: two workers each running torch on every core slow both many-fold.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                     // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
import pipelines  # noqa: E402,F401  (telemetry off, tldextract offline)
from pipelines.common import params as params_mod  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Smaller than params.yaml's defaults so each test trains in seconds; same code paths.
TINY = {
    "base_model": {"corpus_records": 300, "pretrain_steps": 100, "pretrain_batch_size": 8},
    "demo": {"records_per_day": 40, "days": 3},
    "validate": {"min_records": 5},
    "nightly": {"min_new_examples": 10},   # 40 records a night leave 20-35 learnable: all train
    "notify": {"on_success": False},
    "evaluate": {"generation_examples": 8},  # each of five contenders answers 8 golden prompts
}


def tiny_params_dict() -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        raw[section].update(values)
    return raw


def write_tiny_params(path: Path, **overrides) -> Path:
    raw = tiny_params_dict()
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# Fixtures that start a server (PostgreSQL, MLflow, moto's S3, a Prefect API, a browser): the
# tests using one are marked `server`, and `make test-fast` leaves them out.
SERVER_FIXTURES = {"postgres_server", "postgres_url", "mlflow_server", "mlflow_backend_store",
                   "s3_endpoint", "prefect_api", "prefect_server", "browser", "pgvector_server",
                   "pgvector_url"}


def pytest_collection_modifyitems(config, items):
    """Tests using a server fixture are marked `server`. Tests marked `long` take more minutes than
    the suite has room for: skipped, with the reason, unless NIGHTSHIFT_LONG_TESTS=1 (`make
    test-long`). Tests marked `gpu` need CUDA: skipped, with the reason, on a machine without it."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
    if os.environ.get("NIGHTSHIFT_LONG_TESTS") != "1":
        skip_long = pytest.mark.skip(reason="a long test (minutes of pre-training): `make test-long` runs it")
        for item in items:
            if item.get_closest_marker("long"):
                item.add_marker(skip_long)
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; torch.cuda.is_available() is False here")
    for item in gpu_tests:
        item.add_marker(skip)


def write_training_records(path: Path, seed: int, day: str, count: int = 48) -> Path:
    """`count` sample support dialogues of one day, the six topics in turn: a training file."""
    from pipelines.common.records import write_jsonl
    from pipelines.samples import sample_logs

    rng = random.Random(seed)
    write_jsonl(path, [sample_logs.make_record(rng, dt.date.fromisoformat(day), i,
                                               sample_logs.TOPICS[i % len(sample_logs.TOPICS)])
                       for i in range(count)])
    return path


@pytest.fixture(scope="session")
def params() -> params_mod.Params:
    return params_mod.parse(tiny_params_dict())


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, params) -> str:
    """A tiny Llama and tokenizer, built and briefly pre-trained by the base_model stage."""
    from pipelines.model import base_model

    out = tmp_path_factory.mktemp("base") / "base"
    base_model.run(params.base_model, params.seed, out, ROOT / "data/corpus")
    return str(out)


@pytest.fixture
def replace():
    return dataclasses.replace


# --- Real servers on loopback -------------------------------------------------------------------

PG_BIN = Path(os.environ.get("NIGHTSHIFT_PG_BIN", "/usr/lib/postgresql/15/bin"))
INSTALL_HINT = ("run `make services` (as root, or with sudo): it installs Debian's postgresql, "
                "chromium and chromium-driver packages")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    """A running private PostgreSQL server; `role` owns the databases the tests create."""

    host: str
    port: int
    role: str
    password: str
    superuser: str
    superuser_password: str

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.role}:{self.password}@{self.host}:{self.port}/{database}"

    def admin(self, *statements: str) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(
            f"postgresql+psycopg2://{self.superuser}:{self.superuser_password}@{self.host}:{self.port}/postgres",
            isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for statement in statements:
                    conn.execute(sa.text(statement))
        finally:
            engine.dispose()

    def create_database(self, name: str) -> str:
        """A new, empty database owned by `role`; returns its SQLAlchemy URL."""
        self.admin(f'CREATE DATABASE "{name}" OWNER "{self.role}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pgvector_server(tmp_path_factory):
    """A private PostgreSQL 16 with the pgvector extension, from the `pgserver` wheel (Debian's
    archive here has no pgvector): on a Unix socket in a temporary folder, stopped at the end of
    the session. Yields its URL (postgresql://postgres:@/postgres?host=...)."""
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pgvector"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def pgvector_database(server_url: str) -> str:
    """A fresh, empty database on the pgvector server: its URL."""
    import psycopg2

    name = f"t_{secrets.token_hex(6)}"
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return server_url.replace("/postgres?", f"/{name}?", 1)


@pytest.fixture
def pgvector_url(pgvector_server):
    """A fresh, empty database on the pgvector server for one test: its URL."""
    return pgvector_database(pgvector_server)


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL 15 server on 127.0.0.1 (a free port) in a temporary folder.

    Started with Debian's binaries as the `postgres` user when the tests run as root (initdb
    refuses root), as the current user otherwise; password (SCRAM) authentication; stopped and
    removed at the end of the session.
    """
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            pytest.fail(f"PostgreSQL 15 server binary {PG_BIN / tool} not found: {INSTALL_HINT} "
                        "(or point NIGHTSHIFT_PG_BIN at the folder holding initdb and pg_ctl)",
                        pytrace=False)
    as_owner: list[str] = []
    owner = None
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(f"running as root, but there is no `postgres` user to run the server as: {INSTALL_HINT}",
                        pytrace=False)
        as_owner, owner = ["runuser", "-u", "postgres", "--"], "postgres"

    root = Path(tempfile.mkdtemp(prefix="nightshift-pg-"))
    data, log, pwfile = root / "data", root / "server.log", root / "superuser.pw"
    superuser_password = secrets.token_hex(16)
    pwfile.write_text(superuser_password + "\n")
    if owner:
        for path in (root, pwfile):
            shutil.chown(path, owner, owner)

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_owner, *cmd], capture_output=True, text=True)
        if done.returncode != 0:
            server_log = log.read_text()[-3000:] if log.exists() else ""
            pytest.fail(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stdout}{done.stderr}{server_log}",
                        pytrace=False)

    port = free_port()
    run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
        "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
    # fsync off: a throwaway server whose data need not survive a power cut; everything else is stock.
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start")
    server = PostgresServer("127.0.0.1", port, "nightshift", secrets.token_hex(16),
                            "postgres", superuser_password)
    try:
        server.admin(f"CREATE ROLE nightshift LOGIN PASSWORD '{server.password}'")
        yield server
    finally:
        subprocess.run([*as_owner, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """A fresh database on the private server for one test; its SQLAlchemy URL."""
    name = f"t_{request.node.originalname[:40]}_{secrets.token_hex(3)}".lower()
    return postgres_server.create_database(name)


@contextlib.contextmanager
def running_mlflow_server(root: Path, backend_store_uri: str, env: dict | None = None):
    """`mlflow server` on 127.0.0.1 with the given backend store (and `env` added to its
    environment); yields its URL, stops it after."""
    port = free_port()
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", backend_store_uri,
             "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(1)
        else:
            raise TimeoutError(f"mlflow server did not answer in 180 s:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def mlflow_backend_store(request, tmp_path_factory) -> str:
    """The backend store URI of a module's `mlflow server`: an SQLite file, then a fresh database
    on the private PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('mlflow-sqlite')}/mlflow.db"
    module = request.module.__name__.rsplit(".", 1)[-1]
    return request.getfixturevalue("postgres_server").create_database(
        f"mlflow_{module}_{secrets.token_hex(3)}")


@pytest.fixture(scope="module")
def mlflow_server(mlflow_backend_store, tmp_path_factory) -> str:
    """A real `mlflow server` per test module and backend store; its URL."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), mlflow_backend_store) as url:
        yield url


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WAIT_S = 90  # the MLflow UI's first load compiles a large bundle; slow on a busy 2-core machine


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium through Debian's chromedriver: nothing is downloaded."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            pytest.fail(f"{binary} not found: {INSTALL_HINT}", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1600,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
