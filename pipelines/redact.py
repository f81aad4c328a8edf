"""redact: replace personal data and secrets with typed placeholders, before anything learns from them.

Presidio's analyzer finds entities (its pattern recognizers, plus the project's recognizers for API
keys and street addresses); the anonymizer replaces each with `<TYPE_n>`, where n is the same for
the same value within one record, so "<PERSON_1> ... <PERSON_1>" still reads as one person.
Roles and message structure are untouched. Lines that could not be parsed are redacted as text.

    python -m pipelines.redact data/raw/2026-01-05.jsonl data/redacted
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections import Counter
from pathlib import Path

from pipelines import params as params_mod
from pipelines.records import is_invalid, parse_line, write_json, write_jsonl

# Entity types only an NER model finds; listed in the report when none is configured.
NER_ENTITIES = ["PERSON", "LOCATION", "NRP", "ORGANIZATION"]

# Secrets of common providers. (name, regex, score)
API_KEY_PATTERNS = [
    ("openai_key", r"\bsk-[A-Za-z0-9_-]{20,}\b", 0.9),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", 0.9),
    ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b", 0.9),
    ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b", 0.9),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\b", 0.9),
]
STREET_PATTERN = (r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}"
                  r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr|Way|Court|Ct)\b"
                  r"(?:,\s*[A-Z][a-z]+)?")


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
    """Presidio's AnalyzerEngine with all predefined recognizers plus the project's own."""
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry

    nlp = _nlp_engine(language, ner_model)
    registry = RecognizerRegistry(supported_languages=[language])
    registry.load_predefined_recognizers(nlp_engine=nlp, languages=[language])
    registry.add_recognizer(PatternRecognizer(
        supported_entity="API_KEY", supported_language=language, name="ApiKeyRecognizer",
        patterns=[Pattern(name, regex, score) for name, regex, score in API_KEY_PATTERNS]))
    registry.add_recognizer(PatternRecognizer(
        supported_entity="STREET_ADDRESS", supported_language=language,
        name="StreetAddressRecognizer", patterns=[Pattern("street", STREET_PATTERN, 0.6)]))
    return AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=[language])


class Redactor:
    """Redacts records; one instance keeps the engines warm across records."""

    def __init__(self, p: params_mod.RedactParams):
        from presidio_anonymizer import AnonymizerEngine

        self.params = p
        self.analyzer = build_analyzer(p.language, p.ner_model)
        self.anonymizer = AnonymizerEngine()
        supported = set(self.analyzer.get_supported_entities(p.language))
        self.entities = [e for e in p.entities if e in supported]
        self.not_looked_for = sorted(set(p.entities) - supported
                                     | (set() if p.ner_model else set(NER_ENTITIES)))
        self.counts: Counter[str] = Counter()

    def redact_text(self, text: str, placeholders: dict[tuple[str, str], str]) -> str:
        """Replace entities in `text`; `placeholders` carries identities across one record."""
        from presidio_anonymizer.entities import OperatorConfig

        if not text:
            return text
        results = self.analyzer.analyze(text, language=self.params.language, entities=self.entities,
                                        score_threshold=self.params.score_threshold)
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
        placeholders: dict[tuple[str, str], str] = {}
        if is_invalid(record):
            return {**record, "_invalid": self.redact_text(record["_invalid"], placeholders)}
        messages = record.get("messages")
        if isinstance(messages, list):
            record = dict(record)
            record["messages"] = [
                {**m, "content": self.redact_text(m["content"], placeholders)}
                if isinstance(m, dict) and isinstance(m.get("content"), str) else m
                for m in messages]
        return record

    def report(self, n_records: int) -> dict:
        return {"records": n_records, "replaced": dict(sorted(self.counts.items())),
                "entities_looked_for": self.entities, "entities_not_looked_for": self.not_looked_for,
                "ner_model": self.params.ner_model}


def redact_file(p: params_mod.RedactParams, in_path: Path, out_path: Path) -> dict:
    """Redact a JSONL file: one record in, one record out, same order. Returns the report."""
    redactor = Redactor(p)
    with open(in_path, "rb") as f:
        lines = [line.rstrip(b"\r\n") for line in f if line.strip()]
    n = write_jsonl(out_path, (redactor.redact_record(parse_line(line)) for line in lines))
    return redactor.report(n)


def run(p: params_mod.RedactParams, raw_snapshot: Path, out_dir: Path) -> dict:
    """Redact one raw snapshot.

    Args:
        p: the `redact` section of params.yaml.
        raw_snapshot: data/raw/<date>.jsonl, the lines exactly as pulled.
        out_dir: gets records.jsonl (one line per pulled line, same order) and report.json.
    Returns:
        the report: counts per entity type, and the types that were not looked for.
    """
    report = redact_file(p, raw_snapshot, out_dir / "records.jsonl")
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
    print(f"redact: {report['records']} records, replaced {report['replaced']}")


if __name__ == "__main__":
    main()
