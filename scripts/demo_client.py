"""A scripted user of `nightshift serve-model`, for `make demo-serve`.

Asks the sample generator's questions (personal data included, as real users write it) through
the OpenAI-compatible API, one conversation each, and rates every answer through POST
/v1/feedback: thumbs-up when the answer takes up the question's order number or topic word,
down otherwise (a crude user, but a consistent one). Prints each exchange's version and the
tally per version.

    python scripts/demo_client.py --url http://127.0.0.1:8000 --questions 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import sys
from collections import Counter

import httpx

from pipelines.samples import sample_logs


def rating(question: str, answer: str) -> str:
    """up when the answer repeats a number or a longer word of the question, else down."""
    numbers = set(re.findall(r"\d{3,}", question))
    words = {w for w in re.findall(r"[a-z]{6,}", question.lower())}
    said = answer.lower()
    return "up" if any(n in said for n in numbers) or any(w in said for w in words) else "down"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: %(default)s)")
    parser.add_argument("--questions", type=int, default=30, help="how many to ask (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-feedback", action="store_true", help="ask only")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    today = dt.datetime.now(dt.timezone.utc).date()
    tally: Counter = Counter()
    with httpx.Client(base_url=args.url, timeout=120) as client:
        for i in range(args.questions):
            topic = sample_logs.TOPICS[i % len(sample_logs.TOPICS)]
            record = sample_logs.make_record(rng, today, 5000 + i, topic)
            messages = [m for m in record["messages"] if m["role"] != "assistant"]
            asked = client.post("/v1/chat/completions", json={
                "messages": messages, "user": record["metadata"].get("user_id") or f"demo-user-{i}"})
            asked.raise_for_status()
            body = asked.json()
            version = asked.headers["x-nightshift-version"]
            answer = body["choices"][0]["message"]["content"]
            verdict = rating(messages[-1]["content"], answer)
            if not args.no_feedback:
                client.post("/v1/feedback", json={"response_id": body["id"], "rating": verdict}).raise_for_status()
            tally[(version, "answered" if args.no_feedback else f"rated {verdict}")] += 1
            print(f"[version {version}] {messages[-1]['content'][:60]!r} -> {answer[:60]!r} "
                  + ("" if args.no_feedback else f"({verdict})"), flush=True)
    for (version, what), n in sorted(tally.items()):
        print(f"version {version}: {n} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
