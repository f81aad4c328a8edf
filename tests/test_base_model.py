"""The base_model stage's copying rows (pipelines/model/base_model.py): what they ask the model to
predict, and a pre-training run with them on. Whether they grow a base that copies from its
context is tests/test_worth.py's `copying_base` (marked `long`)."""
import dataclasses
import random

from pipelines.common.modeling import IGNORE_INDEX, load_tokenizer
from pipelines.model import base_model
from pipelines.samples.sample_logs import corpus_dialogues
from tests.conftest import ROOT


def test_a_copy_row_scores_only_the_repeat_of_its_passage():
    stream = list(range(100, 400))
    ids, unscored = base_model.copy_row(stream, random.Random(0), bos_id=1)
    passage = ids[1:unscored]
    assert ids[0] == 1 and 8 <= len(passage) <= 64 and ids[unscored:] == passage


def test_a_copy_chat_row_scores_an_answer_that_an_earlier_exchange_gave_word_for_word(tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    dialogues = corpus_dialogues(0, 30)
    words = base_model.answer_words("Your order ships today, (tracking) by courier. Thanks!")
    assert words == ["Your", "order", "ships", "today", "tracking", "by", "courier", "Thanks"]
    rng = random.Random(3)
    for _ in range(20):
        ids, unscored = base_model.copy_chat_row(tokenizer, dialogues, words, rng, 256)
        scored = tokenizer.decode(ids[unscored:], skip_special_tokens=True).strip()
        context = tokenizer.decode(ids[:unscored], skip_special_tokens=True)
        assert len(ids) <= 256 and scored and set(scored.split()) <= set(words)
        assert scored in context  # the answer to predict is in the context already


def test_pre_training_with_copying_rows_on_runs_and_saves_a_base(tmp_path, params):
    p = dataclasses.replace(params.base_model, pretrain_steps=3, copy_share=0.25, copy_chat_share=0.25)
    metrics = base_model.run(p, params.seed, tmp_path / "base", ROOT / "data/corpus")
    assert len(metrics["losses"]) == 3 and all(loss > 0 for loss in metrics["losses"])
    assert (tmp_path / "base" / "model.safetensors").exists()


def test_padded_rows_leave_their_unscored_tokens_and_padding_out_of_the_loss():
    ids, attention, labels = base_model.padded([([5, 6, 7, 8], 2), ([9, 10], 1)], pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]] and attention.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert labels.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 7, 8], [IGNORE_INDEX, 10, IGNORE_INDEX, IGNORE_INDEX]]
