"""A labeled set of text with no personal data: what redaction must leave alone.

data/labeled/no_pii.jsonl holds hand-written records in the project's record format (code in
several languages, stack traces, config files, dependency and version lists, analogies, prose, log
lines), each with `metadata.kind`. They are full of what pattern recognizers mistake for personal
data: `result.append(x)` (`.app` is a top-level domain), version numbers of four parts (IPv4
addresses), long integers and timestamps (phone and card numbers), commit hashes and sha256
digests (keys), "Night : Day :: Right : Left" (IPv6's `::`). A record counts as altered if
redaction changes any of its texts or the residual scan flags it (it would be quarantined).

    python -m pipelines.samples.no_pii_testset            # the altered fraction and what was altered
    python -m pipelines.samples.no_pii_testset --part heldout   # one part: `dev` or `heldout`

Rules are developed against the `dev` part and checked on the `heldout` part (every fourth
record), which is not looked at while they are written; the tests assert on the whole set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.common import params as params_mod
from pipelines.common.records import parse_line

PATH = Path(__file__).resolve().parents[2] / "data" / "labeled" / "no_pii.jsonl"


def load(path: Path = PATH) -> list[dict]:
    """The records of the no-PII set, in file order."""
    with open(path, "rb") as f:
        return [parse_line(line.rstrip(b"\r\n")) for line in f if line.strip()]


def part(records: list[dict], name: str | None) -> list[dict]:
    """The `dev` or `heldout` part of the records (every fourth is held out), or all for None."""
    if name is None:
        return records
    if name not in ("dev", "heldout"):
        raise ValueError(f"part is dev or heldout, not {name!r}")
    return [r for i, r in enumerate(records) if (i % 4 == 3) == (name == "heldout")]


def texts(record: dict) -> list[str]:
    return [m["content"] for m in record.get("messages") or [] if isinstance(m.get("content"), str)]


def measure(redactor, records: list[dict]) -> dict:
    """Fraction of `records` that redaction alters or flags, and which, with the changed texts.

    Args:
        redactor: a pipelines.privacy.redact.Redactor.
        records: records without personal data (`load()`).
    Returns:
        {"records", "altered", "rate", "by_kind": {kind: [altered, total]},
         "altered_records": [{"id", "kind", "residual", "changes": [[before, after], ...]}]}
    """
    altered, by_kind = [], {}
    for record in records:
        out = redactor.redact_record(record)
        kind = (record.get("metadata") or {}).get("kind", "")
        changes = [[a, b] for a, b in zip(texts(record), texts(out)) if a != b]
        counts = by_kind.setdefault(kind, [0, 0])
        counts[1] += 1
        if changes or out.get("_residual"):
            counts[0] += 1
            altered.append({"id": record.get("id"), "kind": kind,
                            "residual": out.get("_residual", []), "changes": changes})
    return {"records": len(records), "altered": len(altered),
            "rate": round(len(altered) / max(len(records), 1), 4), "by_kind": by_kind,
            "altered_records": altered}


def main(argv: list[str] | None = None) -> None:
    from pipelines.privacy.redact import Redactor

    parser = argparse.ArgumentParser(prog="python -m pipelines.samples.no_pii_testset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--path", type=Path, default=PATH)
    parser.add_argument("--part", choices=["dev", "heldout"], default=None, help="one part only")
    args = parser.parse_args(argv)
    result = measure(Redactor(params_mod.load(args.params).redact), part(load(args.path), args.part))
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
