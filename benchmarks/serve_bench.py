"""`nightshift serve-model` on the tiny model: requests per second, p50/p95 latency, and the time
from an alias move to the first answer from the new version.

In a scratch demo workspace (`nightshift demo --fresh`: two nights, versions 1 and 2) it starts
`nightshift serve-model` with the workspace's params (serving.poll_seconds as set there), then:

- for each number of concurrent clients, each client sends one chat after another for
  `--seconds` (the golden prompts in turn, `max_tokens` 48, not logged: "store": false);
- moves @champion between versions 2 and 1 with the registry's client, `--moves` times, timing
  from the move to the first answer that names the new version (asked every 0.1 s).

    python benchmarks/serve_bench.py [--workspace /tmp/nightshift-serve-bench] [--reuse]

Prints a markdown table and writes benchmarks/results/serve.json. Run it with nothing else on
the machine.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

RESULTS = Path(__file__).parent / "results" / "serve.json"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompts() -> list[str]:
    golden = ROOT / "data/golden/golden.jsonl"
    return [json.loads(line)["messages"][-2]["content"] for line in golden.read_text().splitlines()]


def ask(client: httpx.Client, url: str, text: str) -> httpx.Response:
    return client.post(f"{url}/v1/chat/completions", timeout=120,
                       json={"messages": [{"role": "user", "content": text}], "max_tokens": 48,
                             "store": False})


def load(url: str, clients: int, seconds: float, texts: list[str]) -> dict:
    latencies: list[float] = []
    errors = []
    stop = time.time() + seconds

    def client(offset: int) -> None:
        with httpx.Client() as http:
            i = offset
            while time.time() < stop:
                started = time.perf_counter()
                answer = ask(http, url, texts[i % len(texts)])
                if answer.status_code != 200:
                    errors.append(answer.status_code)
                latencies.append(time.perf_counter() - started)
                i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    began = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - began
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(latencies), "errors": len(errors),
            "requests_per_second": round(len(latencies) / wall, 2),
            "p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
            "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1)}


def follow_times(ws: Path, url: str, moves: int) -> list[float]:
    sys.path.insert(0, str(ROOT))
    from flows import workspace as wsp
    from registry import mlflow_registry as reg

    p = wsp.load_params(ws)
    c = reg.client(p.registry)
    times = []
    with httpx.Client() as http:
        for k in range(moves):
            target = "1" if k % 2 == 0 else "2"
            moved = time.time()
            c.set_registered_model_alias(p.registry.model_name, "champion", target)
            while ask(http, url, "Where is my order?").headers.get("x-nightshift-version") != target:
                time.sleep(0.1)
            times.append(round(time.time() - moved, 2))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/nightshift-serve-bench"))
    parser.add_argument("--reuse", action="store_true", help="use the workspace as it is")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--moves", type=int, default=4)
    args = parser.parse_args(argv)
    ws = args.workspace.resolve()
    if not args.reuse:
        subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--fresh", "--workspace", str(ws)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve-model", "--port", str(port),
                               "--workspace", str(ws)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = time.time()
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).json()["version"]:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() - started > 180:
                raise SystemExit("serve-model did not start")
            time.sleep(0.2)
        ready = round(time.time() - started, 1)
        texts = prompts()
        ask(httpx.Client(), url, texts[0])   # the first generation warms the model up
        rows = [load(url, n, args.seconds, texts) for n in args.clients]
        follows = follow_times(ws, url, args.moves)
    finally:
        server.terminate()
        server.wait(timeout=30)

    import os

    params = (ws / "params.yaml").read_text()
    poll = next(line.split(":")[1].split("#")[0].strip() for line in params.splitlines()
                if line.strip().startswith("poll_seconds:"))
    print(f"serve-model ready (model loaded) {ready} s after start; {os.cpu_count()} CPUs\n")
    print("| concurrent clients | requests | requests/s | p50 ms | p95 ms | errors |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['requests_per_second']} | {r['p50_ms']} | "
              f"{r['p95_ms']} | {r['errors']} |")
    print(f"\nalias move -> first answer from the new version (poll_seconds {poll}): "
          + ", ".join(f"{t} s" for t in follows))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"ready_seconds": ready, "load": rows, "poll_seconds": float(poll),
                                   "follow_seconds": follows, "cpus": os.cpu_count()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
