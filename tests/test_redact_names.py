"""Names and places with the default params: the NER model of the locked install plus the chat-text
rules (pipelines/privacy/names.py), measured on data/labeled/persons.jsonl."""

import re

import pytest

from pipelines.privacy import names as redact_names
from pipelines.privacy import redact


@pytest.fixture(scope="module")
def redactor(params):
    assert params.redact.ner_model, "the default params must redact names"
    return redact.Redactor(params.redact)


def redacted(redactor, rows):
    redactor.analyze_batch(row["text"] for row in rows)
    return [redactor.redact_text(row["text"], {}) for row in rows]


def chat(*turns):
    return {"id": "r1", "timestamp": "2026-01-05T10:00:00Z", "feedback": None, "metadata": {},
            "messages": [{"role": role, "content": text} for role, text in turns]}


def test_the_labeled_set_is_varied_and_every_label_is_in_its_sentence():
    rows = redact_names.labeled_set()
    with_names = [r for r in rows if r["persons"]]
    free = [r for r in rows if not r["persons"] and not r["locations"]]
    assert len(with_names) >= 250 and len(free) >= 150
    assert {r["split"] for r in rows} == {"dev", "heldout"}
    for row in rows:
        assert all(label in row["text"] for label in row["persons"] + row["locations"]), row
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == len(texts)
    # Many shapes: lower-case names, handles, multi-line sign-offs, hyphens, apostrophes, accents.
    names = [n for r in rows for n in r["persons"]]
    assert sum(n.islower() for n in names) >= 20 and sum(n.startswith("@") for n in names) >= 4
    assert sum("-" in n for n in names) >= 8 and sum("'" in n for n in names) >= 3
    assert sum(bool(re.search(r"[^\x00-\x7f]", n)) for n in names) >= 25
    assert sum("\n" in r["text"] for r in with_names) >= 20


@pytest.mark.parametrize("split", ["dev", "heldout"])
def test_person_recall_and_false_positives_meet_the_targets(redactor, split):
    rows = redact_names.labeled_set(split)
    figures = redact_names.score(rows, redacted(redactor, rows))
    assert figures["person_recall"] >= 0.95, figures
    assert figures["false_positive_rate"] <= 0.05, figures
    assert figures["location_recall"] >= 0.9, figures  # vanilla Presidio, same model: 0.831


def test_a_name_the_model_splits_leaves_no_surname_behind(redactor):
    # spaCy's small model tags "Mr. Hassan" and leaves "Jaber"; "Min-jun" is missed before "Lee".
    for text, name in [("Can you confirm the booking for Mr. Hassan Jaber?", "Hassan Jaber"),
                       ("My colleague from Seoul, Min-jun Lee, can't log in.", "Min-jun Lee"),
                       ("Can Marguerite Dubois-Leclerc sign the form?", "Marguerite Dubois-Leclerc")]:
        out = redactor.redact_text(text, {})
        assert not any(redact_names.survives(p, out) for p in redact_names.name_parts(name)), out
        assert out.count("<PERSON_1>") == 1, out


def test_chat_shapes_are_caught(redactor):
    for text, gone in [("hey its priya again, still no reply", "priya"),
                       ("Cheers,\nDeclan", "Declan"),
                       ("Thanks!! - Shreya", "Shreya"),
                       ("@dkowalski can you check the deploy logs?", "dkowalski"),
                       ("my friend jamal told me about the discount", "jamal"),
                       ("Regards,\nS. Raghunathan", "Raghunathan"),
                       ("Mr. and Mrs. Kowalczyk would like to upgrade.", "Kowalczyk"),
                       ("lol thanks ben", "ben")]:
        out = redactor.redact_text(text, {})
        assert not redact_names.survives(gone, out) and "<PERSON_1>" in out, out


def test_words_that_are_also_names_and_product_names_are_left_alone(redactor):
    for text in ["Bill me annually instead of monthly, please.", "Mark the ticket as resolved.",
                 "Will the update be available on Monday?", "Is there a grace period?",
                 "Hope this helps!", "Kind regards,\nCustomer Success", "Best regards,\nThe Support Team",
                 "Under Advanced, enable Developer Mode.", "The Docker image is built from python:3.11-slim.",
                 "Windows Defender flags the installer.", "Hi team, quick question about exports.",
                 "@property\ndef name(self): return self._name", "npm install @types/node"]:
        assert redactor.redact_text(text, {}) == text


@pytest.mark.parametrize("text", [
    "for i, val in enumerate(vals):\n    total += val",                    # identifiers in code
    "Run `sys.exit(main())` at the end.",                                  # inline code
    "the sum is computed by math.fsum, and max picks the largest",         # a lower-case word
    "Feb 28 23:59:01 db-1 postgres[887]: LOG:  checkpoint starting",       # a log line's date
    "  Reason:       Completed\n  Started:      Wed, 12 Jun 2024 08:00:00 +0000",  # aligned fields
    "[tool.ruff]\nline-length = 100\nexclude = build,dist",               # a config file
    "Is Kotlin or Dart better for a small mobile app?",                    # programming languages
    "We upgraded to Node 20.11 and Python 3.12 last week.",                # a product's version
    "npm install @tanstack/react-query",                                   # a scoped package
])
def test_code_logs_dates_and_technical_words_are_not_names_or_places(redactor, text):
    assert redactor.redact_text(text, {}) == text


def test_a_name_written_in_code_or_next_to_it_is_still_redacted(redactor):
    for text, name in [('author = "Priya Iyer"', "Priya Iyer"),
                       ("# TODO: ask Tomasz Nowak about the retry logic\nretries = 3", "Tomasz Nowak"),
                       ("Hi Priya, run `make test` again.", "Priya"),
                       ("Thanks, Declan\n\n```\nval x = 1\n```", "Declan")]:
        out = redactor.redact_text(text, {})
        assert not any(redact_names.survives(p, out) for p in redact_names.name_parts(name)), out


def test_places_are_redacted_but_not_country_codes_or_verbs(redactor):
    out = redactor.redact_text("We moved from Toronto to Vancouver; the UK plan is fine. Delete it.", {})
    assert "Toronto" not in out and "Vancouver" not in out and "<LOCATION_2>" in out
    assert "UK plan" in out and "Delete it." in out


def test_known_places_are_found_where_their_context_says_place(redactor):
    for text, place in [("Greetings from rainy Glasgow. Is the outage over?", "Glasgow"),
                        ("we are moving to paris in may", "paris"),
                        ("Our warehouse team in Durban ships on Mondays.", "Durban"),
                        ("Hi, it's Lucia from the Sevilla store.", "Sevilla"),
                        ("We have a Lagos-based support team.", "Lagos"),
                        ("Merci, je suis à Lyon.", "Lyon"),
                        ("Most of the users are in Mumbai and Pune.", "Pune"),
                        ("I'm from Mobile, Alabama.", "Mobile"),
                        ("We moved to Nice last year.", "Nice")]:
        out = redactor.redact_text(text, {})
        assert not redact_names.survives(place, out) and "<LOCATION_1>" in out, out


@pytest.mark.parametrize("text", [
    "Nice work on the release!",                           # a city named like a word
    "Switch to Mobile view in Settings.",
    "Enable Reading mode in the browser.",
    "Greetings from sunny Split!",                         # the model does not read it as a place
    "The Toyota store replaced my key fob.",               # a company named after its town
    "We upgraded to Monterey and the app crashed.",        # a release, not a trip
    "i'm at home right now, from time to time the sync fails",
    'config.region = "Frankfurt"\nconfig.replicas = 3',      # code
])
def test_words_products_and_code_named_like_places_are_left_alone(redactor, text):
    assert redactor.redact_text(text, {}) == text


def test_a_first_name_that_is_also_a_city_is_a_place_only_in_a_places_context(redactor):
    assert "<LOCATION" not in redactor.redact_text("Florence said the invoice is wrong.", {})
    assert "<LOCATION_1>" in redactor.redact_text("The Victoria branch is closing.", {})


def test_the_place_gazetteer_is_read_from_the_installed_package(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the place gazetteer must not reach the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    redact_names.places.cache_clear()
    names, longest = redact_names.places()
    assert len(names) > 30_000 and longest <= redact_names.MOST_PLACE_WORDS
    assert {"glasgow", "bogota", "rio de janeiro", "seville", "new zealand", "ohio"} <= set(names)
    assert names["monterey"] < redact_names.BIG_PLACE  # its own size, not that of Monterrey, Mexico


def test_a_person_keeps_one_placeholder_across_a_records_messages(redactor):
    out = redactor.redact_record(chat(("user", "Hi, I'm Priya Iyer and my order is late."),
                                      ("assistant", "Sorry about that, Priya Iyer! Checking now.")))
    texts = [m["content"] for m in out["messages"]]
    assert "Priya" not in " ".join(texts) and "Iyer" not in " ".join(texts)
    assert "<PERSON_1>" in texts[0] and "<PERSON_1>" in texts[1]


@pytest.mark.slow
def test_batch_analysis_gives_the_same_results_as_one_text_at_a_time(params):
    rows = redact_names.labeled_set()
    texts = [r["text"] for r in rows]
    one, batch = redact.Redactor(params.redact), redact.Redactor(params.redact)
    batch.analyze_batch(texts)
    key = lambda results: sorted((r.entity_type, r.start, r.end, r.score) for r in results)  # noqa: E731
    for text in texts:
        assert key(batch.cache[text]) == key(one.analyze(text)), text


def test_without_an_ner_model_names_are_not_looked_for_and_say_so(params, replace):
    redactor = redact.Redactor(replace(params.redact, ner_model=None))
    assert {"PERSON", "LOCATION"} <= set(redactor.looked_for()["entities_not_looked_for"])
    assert redactor.redact_text("Hi, I'm Priya Iyer.", {}) == "Hi, I'm Priya Iyer."


def test_the_default_model_is_the_locked_one_and_runs_without_its_parser(redactor):
    nlp = redactor.analyzer.nlp_engine.get_nlp("en")
    assert nlp.meta["name"].startswith("core_web_sm") and nlp.meta["version"] == "3.8.0"
    assert "ner" in nlp.pipe_names
    assert "parser" not in nlp.pipe_names and "lemmatizer" in nlp.pipe_names
