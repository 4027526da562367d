"""`mcq_mode: options` / `options_sum`: each option's text scored as the answer (lm-evaluation-harness acc_norm /
acc)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genqa.backbones.generation import best_candidate, candidate_scores, encode_prompts, score_texts
from genqa.config import QAArguments
from genqa.data.encoding import PromptEncoder
from genqa.data.tasks import get_task
from genqa.data.templates import load_template

OPTIONS = [["Paris", "a small village in the mountains"],
           ["1902", "in the spring of 1875", "never"],
           ["blue", "green", "a very long answer about red things", "yellow"]]
ROWS = [{"id": str(i), "context": "Some context about a city, a year and colours.", "question": f"Question {i}?",
         "options": opts, "answers": [], "answer_starts": [], "label": -1} for i, opts in enumerate(OPTIONS)]


def _task(mode: str = "options"):
    return get_task(QAArguments(task="mcq", options_column="options", template="chatml", mcq_mode=mode))


@pytest.fixture(scope="module")
def model_and_encoder(tiny_llama_path, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32).eval()
    return model, PromptEncoder(_task(), tiny_tokenizer, load_template("chatml"), max_length=256)


@torch.no_grad()
def _brute_force(model, encoder, rows, per_char: bool) -> list[str]:
    """One option at a time, from the full logits of prompt + option."""
    prompts = encode_prompts(encoder, rows, 64)
    picks = []
    for prompt, ex in zip(prompts, rows, strict=True):
        scores = []
        for text in ex["options"]:
            target = encoder.token_ids(text, is_prompt=False)
            logits = model(input_ids=torch.tensor([prompt + target])).logits[0]
            logp = torch.log_softmax(logits[len(prompt) - 1:-1].float(), dim=-1)
            total = float(logp[torch.arange(len(target)), torch.tensor(target)].sum())
            scores.append(total / len(text) if per_char else total)
        picks.append(encoder.task.labels_for(ex)[max(range(len(scores)), key=scores.__getitem__)])
    return picks


@pytest.mark.parametrize("per_char", [True, False])
def test_option_scores_agree_with_the_full_logits(model_and_encoder, per_char):
    model, encoder = model_and_encoder
    task = encoder.task
    picked = score_texts(model, encoder, ROWS, task.option_candidates, per_char, batch_size=3, progress=False)
    assert picked == _brute_force(model, encoder, ROWS, per_char)
    assert [len(task.labels_for(r)) for r in ROWS] == [2, 3, 4] and all(p in "ABCD" for p in picked)
    # the scores behind both normalisations, in one pass (the benchmark reports acc and acc_norm side by side)
    cands, scores = candidate_scores(model, encoder, ROWS, task.option_candidates, batch_size=2)
    assert [best_candidate(c, s, per_char) for c, s in zip(cands, scores, strict=True)] == picked


class _Prefers(torch.nn.Module):
    """A scripted model: the tiny model's logits plus a large bonus on some tokens."""

    def __init__(self, model, token_ids: list[int]) -> None:
        super().__init__()
        self.model, self.config = model, model.config
        self.bonus = torch.zeros(model.config.vocab_size)
        self.bonus[token_ids] = 30.0

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits = out.logits + self.bonus
        return out


@pytest.mark.parametrize("mode", ["options", "options_sum"])
@pytest.mark.parametrize(("favoured", "expected"), [(["Paris", "1902", "yellow"], ["A", "A", "D"]),
                                                    (["Paris", "1902", "blue"], ["A", "A", "A"])])
def test_the_favoured_option_wins(model_and_encoder, mode, favoured, expected):
    """Options whose every token a scripted model favours are picked (the options' tokens overlap little in the tiny
    vocabulary: these do not share a token with another option of the rows)."""
    model, encoder = model_and_encoder
    task = _task(mode)
    ids = sorted({t for text in favoured for t in encoder.token_ids(text, is_prompt=False)}
                 - {t for ex in ROWS for o in ex["options"] if o not in favoured
                    for t in encoder.token_ids(o, is_prompt=False)})
    assert all(set(encoder.token_ids(text, is_prompt=False)) <= set(ids) for text in favoured)  # wholly favoured
    decoding = task.decoding(None)
    assert decoding.mode == "score_texts" and decoding.per_char == (mode == "options")
    picked = score_texts(_Prefers(model, ids), encoder, ROWS, decoding.candidates_of, decoding.per_char,
                         progress=False)
    assert picked == expected


def test_options_mode_trains_on_the_text_and_reads_back_the_label():
    row = {**ROWS[1], "label": 1}
    assert _task("options").target(row) == "in the spring of 1875"
    assert _task("score").target(row) == "B"
    assert _task("options").parse("in the spring of 1875", row) == "B"
    assert _task("options").read_answer(row, "C", "option_score") == ("C", "option_score")
    assert _task("options").gold(row) == _task("score").gold(row) == "B"
    # the default instruction asks for what the model is trained to write
    assert "text of the correct option" in _task("options").instruction
    assert "label of the correct option (A, B, C, D)" in _task("score").instruction
    with pytest.raises(ValueError, match="mcq_mode"):
        QAArguments(task="mcq", options_column="options", mcq_mode="option")


def test_the_recipe_mcq_mode_reaches_predict(tmp_path):
    from genqa.generate import main as generate_main
    from genqa.submission import PredictionStore

    recipe = tmp_path / "mcq_options.yaml"
    recipe.write_text(Path("recipes/tiny/mcq.yaml").read_text(encoding="utf-8") + "mcq_mode: options\n",
                      encoding="utf-8")
    common = ["--base", "tiny:llama", "--recipe", str(recipe), "--data", "data/tiny/zh_mcq.xlsx", "--limit", "3",
              "--no_progress"]
    assert generate_main([*common, "--out", str(tmp_path / "o.csv")]) == 0
    assert generate_main([*common, "--out", str(tmp_path / "s.csv"), "--mcq_mode", "score"]) == 0
    options = PredictionStore(tmp_path / "o.csv.predictions.jsonl").records.values()
    scored = PredictionStore(tmp_path / "s.csv.predictions.jsonl").records.values()
    assert {r["how"] for r in options} == {"option_score"} and {r["how"] for r in scored} == {"label_score"}
    assert all(r["answer"] in {"1", "2", "3", "4"} for r in options)


def test_preview_shows_the_prompt_option_scoring_sends(tiny_tokenizer):
    """With the context cut to fit max_length, the prompt keeps room for the row's longest option, in `genqa
    preview` as in `score_texts`."""
    from genqa.preview import prediction_prompt

    row = {**ROWS[2], "context": " ".join(f"word{i}" for i in range(300))}
    encoder = PromptEncoder(_task("options"), tiny_tokenizer, load_template("chatml"), max_length=160)
    longest = max(len(encoder.token_ids(o, is_prompt=False)) for o in row["options"])
    assert longest > 8
    sent = encode_prompts(encoder, [row], [longest])[0]
    assert prediction_prompt(encoder, row) == sent and len(sent) + longest <= 160
    scored = PromptEncoder(_task("score"), tiny_tokenizer, load_template("chatml"), max_length=160)
    assert prediction_prompt(scored, row) == encode_prompts(scored, [row], 8)[0] != sent


def test_training_time_evaluation_scores_options_under_the_recipes_mode(model_and_encoder):
    from genqa.backbones.generation_eval import predict_answers

    model, encoder = model_and_encoder  # its task's recipe says mcq_mode: options
    answers = predict_answers(model, encoder, ROWS, max_new_tokens=8)
    expected = score_texts(model, encoder, ROWS, encoder.task.option_candidates, True, progress=False)
    assert list(answers.values()) == expected


@pytest.mark.parametrize("kind", ["tiny:llama", "tiny:gemma3"])
def test_prompt_once_then_each_option_gives_the_full_passes_scores(kind):
    """Option scoring runs each prompt once and its options on copies of its cache; the scores are those of every
    (prompt + option) run whole, also on Gemma 3's sliding-window layers (window 48; these prompts are longer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genqa.backbones.generation import _prompt_then_texts, _text_logprobs
    from genqa.backbones.loading import resolve_model_path

    path = resolve_model_path(kind)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, 1000, (n,), generator=g).tolist() for n in (70, 12, 55)]
    targets = [[torch.randint(10, 1000, (k,), generator=g).tolist() for k in ks] for ks in ((1, 3), (2, 5, 1), (4,))]
    with torch.no_grad():
        cached = _prompt_then_texts(model, tok, prompts, targets, torch.device("cpu"))
        whole = _text_logprobs(model, tok, [(p, t) for p, ts in zip(prompts, targets, strict=True) for t in ts],
                               torch.device("cpu"))
    assert [len(r) for r in cached] == [2, 3, 1]
    assert torch.allclose(torch.tensor([s for r in cached for s in r]), torch.tensor(whole), atol=1e-4)
