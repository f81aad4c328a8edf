"""How long a demo cycle takes, stage by stage.

Runs `nightshift demo --fresh` in a scratch workspace (the full default params.yaml, two cycles)
and prints a markdown table of each cycle's per-stage seconds from reports/cycles/<date>.json,
plus the wall time of the whole command (which includes Prefect's ephemeral API start-up).

    python benchmarks/cycle_timings.py [--workspace /tmp/nightshift-bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/nightshift-bench"))
    parser.add_argument("--cycles", type=int, default=2)
    args = parser.parse_args(argv)

    started = time.time()
    subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--fresh", "--workspace",
                    str(args.workspace), "--cycles", str(args.cycles)],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - started

    cycles = [json.loads(p.read_text()) for p in sorted((args.workspace / "reports/cycles").glob("*.json"))]
    stages = list(cycles[0]["timings"])
    print("| stage | " + " | ".join(f"cycle {c['cycle']} (s)" for c in cycles) + " |")
    print("| --- | " + " | ".join("---:" for _ in cycles) + " |")
    for stage in stages:
        print(f"| {stage} | " + " | ".join(f"{c['timings'].get(stage, 0):.1f}" for c in cycles) + " |")
    print("| **sum of stages** | " + " | ".join(f"**{c['seconds']:.1f}**" for c in cycles) + " |")
    print(f"\nwhole `nightshift demo` ({len(cycles)} cycles, Prefect start-up included): {wall:.0f} s")
    for c in cycles:
        print(f"cycle {c['cycle']}: {c['accounting']['pulled']} records pulled, "
              f"{c['train']['examples']} training examples, {c['train']['tokens_per_second']} tokens/s")


if __name__ == "__main__":
    main()
