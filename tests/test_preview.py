"""`genqa preview`: the tokens it marks as trained are exactly the ones training's collator leaves unmasked."""

from __future__ import annotations

import pytest

from genqa.preview import main, marked, preview_row, runs


def _encoder_and_rows(recipe: str, *overrides: str):
    from genqa.backbones.loading import detect_backbone, load_tokenizer
    from genqa.data.rows import load_canonical_splits
    from genqa.data.tasks import get_task
    from genqa.data.templates import load_template
    from genqa.preview import encoder_for
    from genqa.recipe import parse_recipe

    qa, sft, model_args, _ = parse_recipe([recipe, "--use_cpu", "true", *overrides])
    tokenizer = load_tokenizer(model_args)
    task = get_task(qa)
    encoder = encoder_for(detect_backbone(model_args.model_name_or_path, qa.backbone), qa, sft, tokenizer,
                          load_template(qa.template, tokenizer), task)
    train, _, _ = load_canonical_splits(qa, task)
    return encoder, train


@pytest.mark.parametrize("recipe", ["recipes/tiny/mcq.yaml", "recipes/tiny/extractive.yaml",
                                    "recipes/tiny/mcq_generation.yaml"])
def test_marked_tokens_are_the_collated_labels(recipe):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    encoder, rows = _encoder_and_rows(recipe)
    tok = encoder.tokenizer
    collator = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)
    views = [preview_row(encoder, rows[i]) for i in range(3)]
    batch = collator([{"input_ids": v.input_ids, "labels": v.labels} for v in views])
    for i, view in enumerate(views):
        n = len(view.input_ids)
        assert n and batch["input_ids"][i, :n].tolist() == view.input_ids
        collated = (batch["labels"][i, :n] != -100).tolist()
        assert view.trained() == collated and any(collated)
        trained_ids = [t for t, f in zip(view.input_ids, collated, strict=True) if f]
        text = marked(tok, view.input_ids, view.trained(), color=False)
        inside = [part.split("]]")[0] for part in text.split("[[")[1:]]
        assert "".join(inside) == tok.decode(trained_ids, skip_special_tokens=False)
        assert trained_ids[-len(encoder.end_ids):] == encoder.end_ids  # the end token is trained
        # the prediction prompt is the training prompt: everything before the first trained token
        assert view.prompt_ids == view.input_ids[:collated.index(True)]


def test_seq2seq_marks_the_whole_target():
    encoder, rows = _encoder_and_rows("recipes/tiny/t5.yaml")
    view = preview_row(encoder, rows[0])
    assert view.separate_target and all(view.trained())
    assert view.labels == encoder.target_ids(rows[0])


def test_runs_group_consecutive_tokens():
    assert runs([1, 2, 3, 4], [False, False, True, True]) == [([1, 2], False), ([3, 4], True)]


def test_preview_command_prints_rows_prompt_and_lengths(capsys):
    assert main(["recipes/tiny/mcq.yaml", "-n", "2", "--max_length", "230"]) == 0
    out = capsys.readouterr().out
    assert out.count("==== row ") == 2 and "[[" in out and "\033[" not in out  # not a terminal: brackets
    assert out.count("-- prediction prompt (genqa predict):") == 2
    assert "tokens per row before any cut: p50" in out
    assert "max_length 230: 9 kept, 3 with the context cut" in out


def test_preview_shows_rows_max_length_drops(capsys):
    assert main(["recipes/tiny/mcq.yaml", "-n", "1", "--completion_only_loss", "true", "--max_length", "20"]) == 0
    out = capsys.readouterr().out
    assert "dropped: the row does not fit max_length" in out and "dropped: 9 too_long" in out
