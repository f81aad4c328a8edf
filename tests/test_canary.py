"""The canary's verdict: @challenger against @champion on the traffic each answered, from the
records the server logs (exchanges and feedback events)."""

import itertools

from flows.serving import canary

_ids = itertools.count()


def served(version: str, alias: str, n: int, up: int, down: int, answer: str = "It ships in two days.",
           late: bool = False) -> list[dict]:
    """`n` exchanges answered by `version` as `alias`, `up` + `down` of them rated: on the record,
    or by a feedback event logged later (`late`)."""
    records = []
    for i in range(n):
        rid = f"chatcmpl-{next(_ids):032x}"
        rating = "up" if i < up else "down" if i < up + down else None
        records.append({"id": rid, "timestamp": "2026-03-01T10:00:00Z",
                        "messages": [{"role": "user", "content": f"question {rid}"},
                                     {"role": "assistant", "content": answer}],
                        "feedback": None if late else rating,
                        "metadata": {"adapter_version": version, "served_as": alias,
                                     "latency_ms": 40.0 + i, "source": "nightshift serve-model"}})
        if late and rating:
            records.append({"id": f"fb-{rid[-16:]}", "timestamp": "2026-03-02T10:00:00Z",
                            "event": "feedback", "response_id": rid, "feedback": rating,
                            "metadata": {"source": "nightshift serve-model"}})
    return records


def decide(records, params):
    return canary.verdict(canary.measure(records, "champion", "2"),
                          canary.measure(records, "challenger", "3"), params.canary)


def test_a_clearly_better_challenger_is_promoted_and_a_clearly_worse_one_rejected(params):
    better = served("2", "champion", 60, up=20, down=20) + served("3", "challenger", 50, up=36, down=4, late=True)
    result = decide(better, params)
    assert result["decision"] == "promote" and result["p_value"] < params.canary.alpha, result
    assert result["challenger"]["rated"] == 40 and result["challenger"]["up_rate"] == 0.9
    worse = served("2", "champion", 60, up=36, down=4) + served("3", "challenger", 50, up=20, down=20)
    assert decide(worse, params)["decision"] == "reject"


def test_equal_feedback_says_wait_and_so_does_too_little_traffic(params):
    equal = served("2", "champion", 80, up=30, down=10) + served("3", "challenger", 60, up=30, down=10)
    result = decide(equal, params)
    assert result["decision"] == "wait" and result["p_value"] > 0.5
    assert "no significant difference" in result["reasons"][0]
    few = served("2", "champion", 80, up=30, down=10) + served("3", "challenger", 12, up=12, down=0)
    result = decide(few, params)
    assert result["decision"] == "wait" and "too little traffic" in result["reasons"][0]
    assert result["p_value"] is None


def test_a_challenger_that_leaks_personal_data_is_rejected_however_it_is_rated(params):
    leaky = (served("2", "champion", 60, up=20, down=20)
             + served("3", "challenger", 50, up=40, down=0,
                      answer="Call our agent on +1 415 555 0199 or write to jo.doe@example.com"))
    result = decide(leaky, params)
    assert result["decision"] == "reject" and "PII scan" in result["reasons"][0]
    assert result["challenger"]["pii_rate"] == 1.0 and result["champion"]["pii_rate"] == 0.0


def test_only_traffic_served_during_the_canary_by_the_aliased_versions_counts(params):
    """Exchanges without `served_as` (no canary running) or from another version are left out."""
    records = served("2", "champion", 40, up=30, down=10) + served("3", "challenger", 40, up=30, down=10)
    before = served("2", "champion", 40, up=0, down=40)
    for r in before:
        del r["metadata"]["served_as"]
    other = served("1", "champion", 40, up=0, down=40)
    side = canary.measure(records + before + other, "champion", "2")
    assert (side.answered, side.rated, side.up) == (40, 40, 30)
    assert side.latency_p50_ms == 59.5


def test_no_challenger_means_nothing_to_compare(params):
    result = canary.verdict(canary.measure([], "champion", "2"), canary.measure([], "challenger", None),
                            params.canary)
    assert result["decision"] == "wait" and "no @challenger" in result["reasons"][0]
