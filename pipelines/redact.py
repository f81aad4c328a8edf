"""redact: replace personal data and secrets with typed placeholders, before anything learns from them.

Presidio's analyzer finds entities (all its predefined recognizers, plus the project's for API keys
and tokens through detect-secrets, private keys, passwords in URLs, phone formats and street
addresses: pipelines/redact_recognizers.py); the anonymizer replaces each with `<TYPE_n>`, where n is
the same for the same value within one record, so "<PERSON_1> ... <PERSON_1>" still reads as one
person. Roles and message structure are untouched. Lines that could not be parsed are redacted as
text. A residual scan with other detectors (pipelines/residual.py) then marks records in which
something still looks like personal data: `"_residual": [TYPE, ...]`, which validate quarantines.

Fast, and the same as analysing every text with every recognizer:
- each distinct text is analysed once (system prompts and stock answers repeat);
- a recognizer runs on a text only when the text holds that recognizer's trigger, a cheap regex
  that every match of the recognizer contains (a digit for card numbers, '@' for emails, ...).
  A recognizer without a known trigger (an NER model, say) always runs;
- records are spread over `workers` processes in chunks; the output is byte-identical whatever
  the number of workers, and whichever runner (`redact.runner`: this machine's processes, or
  Prefect's Dask task runner on a local or remote Dask cluster, flows/redact_dask.py).

    python -m pipelines.redact data/raw/2026-01-05.jsonl data/redacted
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from pipelines import params as params_mod
from pipelines import residual
from pipelines.records import is_invalid, parse_line, write_json

# Entity types only an NER model finds; listed in the report when none is configured.
NER_ENTITIES = ["PERSON", "LOCATION", "NRP", "ORGANIZATION"]

DIGIT = r"\d"
# A regex that every match of the recognizer contains: where it finds nothing, the recognizer
# could not have found anything either, and is not run (tests/test_redact.py checks each one).
RECOGNIZER_TRIGGERS = {
    "CreditCardRecognizer": DIGIT, "UsBankRecognizer": DIGIT, "UsLicenseRecognizer": DIGIT,
    "UsItinRecognizer": DIGIT, "UsPassportRecognizer": DIGIT, "UsSsnRecognizer": DIGIT,
    "NhsRecognizer": DIGIT, "CryptoRecognizer": DIGIT, "DateRecognizer": DIGIT,
    "IbanRecognizer": DIGIT, "MedicalLicenseRecognizer": DIGIT, "PhoneRecognizer": DIGIT,
    "PhoneFormatRecognizer": DIGIT, "SsnKeywordRecognizer": DIGIT,
    "StreetAddressRecognizer": DIGIT,
    "EmailRecognizer": "@",
    "IpRecognizer": r"\d|:",
    "MacAddressRecognizer": r"[0-9a-f]{2}[:-][0-9a-f]{2}|[0-9a-f]{4}\.",
    "UuidRecognizer": r"[0-9a-f]{8}-",
    "UrlRecognizer": r"\.[a-z]",
    # Every key or token is a long run of key characters, or has a digit, or is a Slack token
    # or a JWT (the shortest forms detect-secrets accepts).
    "DetectSecretsRecognizer": r"[a-z0-9_\-+/=.:]{16,}|\d|xox|eyJ",
    "ApiKeyRecognizer": r"[a-z0-9_\-+/=.:]{16,}",
    "PemPrivateKeyRecognizer": r"-----BEGIN",
    "UrlCredentialsRecognizer": ":",         # user:password
}


class RedactionSetupError(RuntimeError):
    """The configured redaction cannot run (e.g. a named NER model is not installed)."""


def _nlp_engine(language: str, ner_model: str | None):
    import spacy
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    if ner_model:
        if not (spacy.util.is_package(ner_model) or Path(ner_model).exists()):
            raise RedactionSetupError(
                f"redact.ner_model is {ner_model!r}, but no such spaCy model is installed. "
                f"Install it (`python -m spacy download {ner_model}`) or set redact.ner_model: null "
                "to run with pattern recognizers only.")
        model_name = ner_model
    else:
        # A blank pipeline: tokenisation for the pattern recognizers, no NER, nothing to download.
        model_name = str(Path(tempfile.gettempdir()) / f"nightshift-spacy-blank-{language}")
        if not Path(model_name, "config.cfg").exists():
            spacy.blank(language).to_disk(model_name)
    engine = SpacyNlpEngine(models=[{"lang_code": language, "model_name": model_name}])
    engine.load()
    return engine


@functools.lru_cache(maxsize=4)
def build_analyzer(language: str, ner_model: str | None):
    """Presidio's AnalyzerEngine with all predefined recognizers plus the project's own.

    Without an NER model, spaCy's recognizer is left out: a blank pipeline finds nothing with it.
    """
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

    from pipelines.redact_recognizers import project_recognizers

    nlp = _nlp_engine(language, ner_model)
    registry = RecognizerRegistry(supported_languages=[language])
    registry.load_predefined_recognizers(nlp_engine=nlp, languages=[language])
    if not ner_model:
        registry.remove_recognizer("SpacyRecognizer")
    for recognizer in project_recognizers(language):
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=[language])


def entity_triggers(analyzer, language: str, entities: list[str]) -> dict[str, re.Pattern] | None:
    """For each entity type, one regex that fires wherever any of its recognizers could match;
    None if some recognizer has no known trigger (then every text goes to the analyzer)."""
    patterns: dict[str, list[str]] = {e: [] for e in entities}
    for recognizer in analyzer.registry.get_recognizers(language, entities=entities):
        trigger = RECOGNIZER_TRIGGERS.get(recognizer.name)
        if trigger is None:
            return None
        for entity in recognizer.supported_entities:
            if entity in patterns:
                patterns[entity].append(trigger)
    return {e: re.compile("|".join(f"(?:{t})" for t in ts), re.IGNORECASE)
            for e, ts in patterns.items() if ts}


# Longer texts are analysed in overlapping windows: spaCy refuses texts over its max_length (1M
# characters), and an NER model needs about 1 GB of memory per 100,000 characters. The overlap is
# longer than any entity the recognizers find (a 4096-bit PEM private key is about 3,300), so
# every entity lies whole inside at least one window.
WINDOW_CHARS = 100_000
WINDOW_OVERLAP = 4_096


def windows(length: int) -> list[int]:
    """Start offsets of the windows that cover a text of `length` characters."""
    step = WINDOW_CHARS - WINDOW_OVERLAP
    return list(range(0, max(length - WINDOW_OVERLAP, 1), step))


class Redactor:
    """Redacts records; one instance keeps the engines warm and the analysed texts cached."""

    def __init__(self, p: params_mod.RedactParams):
        from presidio_anonymizer import AnonymizerEngine

        self.params = p
        self.analyzer = build_analyzer(p.language, p.ner_model)
        self.anonymizer = AnonymizerEngine()
        supported = set(self.analyzer.get_supported_entities(p.language))
        self.entities = [e for e in p.entities if e in supported]
        self.not_looked_for = sorted(set(p.entities) - supported
                                     | (set() if p.ner_model else set(NER_ENTITIES)))
        self.triggers = entity_triggers(self.analyzer, p.language, self.entities)
        self.cache: dict[str, list] = {}
        self.counts: Counter[str] = Counter()
        self.residual: Counter[str] = Counter()
        self.analysed = 0

    def analyze(self, text: str) -> list:
        """Presidio's results for `text`: the same as analysing it with every recognizer."""
        if text in self.cache:
            return self.cache[text]
        if self.triggers is None:
            entities = self.entities
        else:
            entities = [e for e, trigger in self.triggers.items() if trigger.search(text)]
        results = []
        if entities:
            self.analysed += 1
            seen = set()
            for start in windows(len(text)):
                for r in self.analyzer.analyze(text[start:start + WINDOW_CHARS],
                                               language=self.params.language, entities=entities,
                                               score_threshold=self.params.score_threshold):
                    r.start, r.end = r.start + start, r.end + start
                    if (r.entity_type, r.start, r.end) not in seen:
                        seen.add((r.entity_type, r.start, r.end))
                        results.append(r)
        if len(self.cache) >= self.params.text_cache_size:
            self.cache.clear()
        self.cache[text] = results
        return results

    def redact_text(self, text: str, placeholders: dict[tuple[str, str], str]) -> str:
        """Replace entities in `text`; `placeholders` carries identities across one record."""
        from presidio_anonymizer.entities import OperatorConfig

        if not text:
            return text
        results = self.analyze(text)
        if not results:
            return text

        def assign(entity_type: str, value: str) -> str:
            key = (entity_type, value)
            if key not in placeholders:
                n = 1 + sum(1 for t, _ in placeholders if t == entity_type)
                placeholders[key] = f"<{entity_type}_{n}>"
            return placeholders[key]

        # Number placeholders in reading order (the anonymizer works from the end backwards);
        # a span inside an earlier, longer one is the anonymizer's to drop, so it gets no number.
        covered_until = -1
        for r in sorted(results, key=lambda r: (r.start, -r.end)):
            if r.end > covered_until:
                covered_until = r.end
                assign(r.entity_type, text[r.start:r.end])

        def placeholder_for(entity_type: str):
            def replace(value: str) -> str:
                self.counts[entity_type] += 1
                return assign(entity_type, value)
            return replace

        operators = {r.entity_type: OperatorConfig("custom", {"lambda": placeholder_for(r.entity_type)})
                     for r in results}
        return self.anonymizer.anonymize(text=text, analyzer_results=results, operators=operators).text

    def redact_record(self, record: dict) -> dict:
        """The record with its texts redacted, and `_residual` if anything still shows."""
        placeholders: dict[tuple[str, str], str] = {}
        if is_invalid(record):
            record = {**record, "_invalid": self.redact_text(record["_invalid"], placeholders)}
        elif isinstance(record.get("messages"), list):
            record = dict(record)
            record["messages"] = [
                {**m, "content": self.redact_text(m["content"], placeholders)}
                if isinstance(m, dict) and isinstance(m.get("content"), str) else m
                for m in record["messages"]]
        left = residual.scan_record(record)
        if left:
            record = {**record, "_residual": left}
            self.residual.update(left)
        return record

    def redact_lines(self, lines: list[bytes]) -> tuple[list[str], Counter, Counter, int]:
        """JSON lines out for raw lines in; with the replacement and residual counts of these
        and how many of them have a residual."""
        counts, res = Counter(self.counts), Counter(self.residual)
        records = [self.redact_record(parse_line(line)) for line in lines]
        out = [json.dumps(r, ensure_ascii=False) for r in records]
        return out, self.counts - counts, self.residual - res, sum("_residual" in r for r in records)

    def report(self, n_records: int) -> dict:
        return {"records": n_records, "replaced": dict(sorted(self.counts.items())),
                "residual": dict(sorted(self.residual.items())),
                "records_with_residual": None,
                "entities_looked_for": self.entities, "entities_not_looked_for": self.not_looked_for,
                "ner_model": self.params.ner_model, "workers": self.params.workers}


# The redactor of a worker process: built in the parent before the fork, so workers start warm.
_WORKER: Redactor | None = None


def _redact_chunk(lines: list[bytes]) -> tuple[list[str], Counter, Counter, int]:
    return _WORKER.redact_lines(lines)


def redact_stream(p: params_mod.RedactParams, lines: list[bytes]):
    """Yield (json_lines, replaced, residual, flagged) per chunk of `lines`, in order, over p.workers
    processes (1: this process)."""
    global _WORKER
    _WORKER = Redactor(p)
    chunks = [lines[i:i + p.chunk_records] for i in range(0, len(lines), p.chunk_records)]
    if p.workers <= 1 or len(chunks) <= 1:
        yield from map(_redact_chunk, chunks)
        return
    with multiprocessing.get_context("fork").Pool(p.workers) as pool:
        yield from pool.imap(_redact_chunk, chunks)


def redact_file(p: params_mod.RedactParams, in_path: Path, out_path: Path,
                progress: bool = False) -> dict:
    """Redact a JSONL file: one record in, one record out, same order. Returns the report."""
    with open(in_path, "rb") as f:
        lines = [line.rstrip(b"\r\n") for line in f if line.strip()]
    replaced, left = Counter(), Counter()
    n = flagged = 0
    started = time.time()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as out:
        for json_lines, chunk_replaced, chunk_residual, chunk_flagged in redact_stream(p, lines):
            for line in json_lines:
                out.write(line + "\n")
            n += len(json_lines)
            flagged += chunk_flagged
            replaced += chunk_replaced
            left += chunk_residual
            if progress:
                print(f"redact: {n}/{len(lines)} records, {n / max(time.time() - started, 1e-9):.0f}/s",
                      file=sys.stderr, flush=True)
    report = _WORKER.report(n)
    report.update(replaced=dict(sorted(replaced.items())), residual=dict(sorted(left.items())),
                  records_with_residual=flagged, seconds=round(time.time() - started, 2))
    return report


def run(p: params_mod.RedactParams, raw_snapshot: Path, out_dir: Path) -> dict:
    """Redact one raw snapshot.

    Args:
        p: the `redact` section of params.yaml.
        raw_snapshot: data/raw/<date>.jsonl, the lines exactly as pulled.
        out_dir: gets records.jsonl (one line per pulled line, same order) and report.json.
    Returns:
        the report: counts per entity type, and the types that were not looked for.
    """
    if p.runner == "dask":
        # Prefect's Dask task runner: the same Redactor per chunk, chunks written back in order.
        from flows.redact_dask import redact_with_dask

        started = time.time()
        report = redact_with_dask(p, raw_snapshot, out_dir / "records.jsonl", p.workers,
                                  address=p.dask_address)
        report["seconds"] = round(time.time() - started, 2)
    else:
        report = redact_file(p, raw_snapshot, out_dir / "records.jsonl", progress=True)
    report["runner"] = p.runner
    write_json(out_dir / "report.json", report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.redact", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw_snapshot", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    report = run(params_mod.load(args.params).redact, args.raw_snapshot, args.out_dir)
    print(f"redact: {report['records']} records, replaced {report['replaced']}, "
          f"{report['records_with_residual']} with a residual {report['residual']}")


if __name__ == "__main__":
    main()
