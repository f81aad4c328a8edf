"""A rebase against a nightly cycle, at the demo's volume, and what `rebase.epochs` buys.

In a scratch workspace: `nightshift demo --fresh` (two nights), a second tiny base (`base build`
with 3 layers, 500 pre-training steps, seed 7, as `make demo-rebase` builds it), then three
rebases, each timed and each against the same @champion (version 2): onto the second base with
`rebase.epochs` 2 and 4, and onto the workspace's own base with 4. The first two are the side by
side comparison behind params.yaml's `rebase.epochs`. A passing rebase moves @champion, so the
workspace's champion is put back to version 2 between rebases (`nightshift promote`), and the
params.yaml line with it.

    python benchmarks/rebase_bench.py [--workspace /tmp/nightshift-rebase-bench]

Prints a markdown table and writes benchmarks/results/rebase.json. Run it with nothing else on
the machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "rebase.json"


def nightshift(ws: Path, *args: str) -> tuple[float, str]:
    started = time.time()
    out = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--workspace", str(ws)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"nightshift {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return time.time() - started, out.stdout


def set_epochs(ws: Path, epochs: int) -> None:
    params = ws / "params.yaml"
    text, n = re.subn(r"(?m)^(rebase:\n(?:  .*\n|\n)*?  epochs: )\d+", rf"\g<1>{epochs}", params.read_text())
    if n != 1:
        raise SystemExit("params.yaml has no rebase.epochs line")
    params.write_text(text)
    subprocess.run(["git", "commit", "-qam", f"rebase.epochs: {epochs}"], cwd=ws, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/nightshift-rebase-bench"))
    ws = parser.parse_args(argv).workspace.resolve()

    started = time.time()
    subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--fresh", "--workspace", str(ws)],
                   check=True, stdout=subprocess.DEVNULL)
    demo_seconds = time.time() - started
    cycles = {c["cycle"]: c["seconds"] for c in
              (json.loads(p.read_text()) for p in sorted((ws / "reports/cycles").glob("*.json")))}
    rows = [{"what": f"nightly cycle {cycle}", "seconds": round(s, 1)} for cycle, s in cycles.items()]

    seconds, out = nightshift(ws, "base", "build", str(ws / "models/base2"), "--num-layers", "3",
                              "--pretrain-steps", "500", "--seed", "7")
    rows.append({"what": "base build models/base2 (3 layers, 500 steps)", "seconds": round(seconds, 1),
                 "outcome": out.strip().splitlines()[-1]})
    for base, epochs in (("models/base2", 2), ("models/base2", 4), ("models/base", 4)):
        set_epochs(ws, epochs)
        seconds, out = nightshift(ws, "rebase", "--base", base, "--reason", "benchmark", "--json")
        report = json.loads(out)
        rows.append({"what": f"rebase onto {base}, rebase.epochs {epochs}", "seconds": round(seconds, 1),
                     "examples": report["data"]["examples"], "steps": report["train"]["steps"],
                     "bits_per_byte": report["bits_per_byte"]["candidate"]["new"],
                     "champion_bits_per_byte": report["bits_per_byte"]["champion"]["new"],
                     "outcome": report["outcome"]})
        if report["alias"] == "champion":   # back to version 2, so the next one faces the same champion
            nightshift(ws, "promote", "2", "--reason", "benchmark: the same champion for each rebase")

    print(f"`nightshift demo --fresh` (two nights, Prefect start-up included): {demo_seconds:.0f} s\n")
    print("| what | seconds | held-out bits per byte (champion) | outcome |")
    print("| --- | ---: | --- | --- |")
    for r in rows:
        bpb = (f"{r['bits_per_byte']} ({r['champion_bits_per_byte']}), {r['examples']} examples, "
               f"{r['steps']} steps" if "bits_per_byte" in r else "")
        print(f"| {r['what']} | {r['seconds']} | {bpb} | {r.get('outcome', '')} |")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"demo_seconds": round(demo_seconds, 1), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
