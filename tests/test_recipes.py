"""Every shipped recipe parses and validates; bad keys and bad data fail with clear messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genqa.recipe import RecipeError, parse_recipe
from genqa.sft import main

ROOT = Path(__file__).resolve().parents[1]

RECIPES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes").rglob("*.yaml"))


def test_recipes_exist():
    names = {Path(r).name for r in RECIPES}
    assert {"vi_mcq.yaml", "zh_mcq_alpaca.yaml", "squad_llama.yaml"} <= names
    assert {"extractive.yaml", "mcq.yaml", "mcq_generation.yaml", "abstractive.yaml"} <= names


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_dry_runs(recipe, capsys):
    assert main([recipe, "--dry_run"]) == 0, capsys.readouterr().err
    assert "is valid" in capsys.readouterr().out


def test_vi_mcq_values():
    qa, sft, model, _ = parse_recipe(["recipes/vi_mcq.yaml", "--use_cpu", "true"])
    assert (model.lora_r, model.lora_alpha, model.lora_dropout, model.use_rslora) == (128, 16, 0.0, True)
    assert model.load_in_4bit and model.bnb_4bit_quant_type == "nf4"
    assert sorted(model.lora_target_modules) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert (sft.max_length, sft.per_device_train_batch_size, sft.gradient_accumulation_steps) == (2048, 4, 8)
    assert (sft.learning_rate, sft.warmup_steps, sft.weight_decay, sft.num_train_epochs) == (2e-4, 5, 0.01, 3)
    assert (sft.optim.value, sft.seed, sft.lr_scheduler_type.value) == ("adamw_8bit", 3407, "linear")
    assert qa.task == "mcq_generation" and qa.template == "llama3"


def test_zh_mcq_values():
    qa, sft, model, _ = parse_recipe(["recipes/zh_mcq_alpaca.yaml", "--use_cpu", "true"])
    assert (model.lora_r, model.lora_alpha, model.load_in_4bit) == (4, 8, True)
    assert (sft.max_length, sft.eval_steps) == (1450, 500)
    assert qa.option_labels == ["1", "2", "3", "4"] and qa.template == "llama2"
    assert (qa.submission_id_column, qa.submission_answer_column) == ("ID", "Answer")


def test_cli_override_wins():
    _, sft, _, _ = parse_recipe(["recipes/tiny/mcq.yaml", "--learning_rate", "1e-4", "--output_dir", "x/y"])
    assert sft.learning_rate == 1e-4 and sft.output_dir == "x/y"


def test_config_flag_works_too():
    qa, _, _, path = parse_recipe(["--config", "recipes/tiny/mcq.yaml"])
    assert path == "recipes/tiny/mcq.yaml" and qa.task == "mcq"


def test_stale_key_in_file_names_file_and_new_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "recipes/tiny/mcq.yaml").read_text(encoding="utf-8") + "\nmax_seq_length: 512\n",
                   encoding="utf-8")
    with pytest.raises(RecipeError) as err:
        parse_recipe([str(bad)])
    assert str(bad) in str(err.value) and "max_seq_length" in str(err.value) and "max_length" in str(err.value)


def test_unknown_key_suggests_closest(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("task: mcq\nlerning_rate: 0.1\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"typo.yaml.*`lerning_rate`.*`learning_rate`"):
        parse_recipe([str(bad)])


def test_unknown_cli_key_fails_before_loading(capsys):
    assert main(["recipes/tiny/mcq.yaml", "--lora_rnk", "8"]) == 2
    assert "lora_rnk" in capsys.readouterr().err


def test_unknown_template_fails_in_dry_run(capsys):
    assert main(["recipes/tiny/mcq.yaml", "--template", "vicuna", "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert "vicuna" in err and "alpaca" in err


def test_missing_column_names_column_and_key(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["recipes/tiny/mcq.yaml", "--answer_column", "答案", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "答案" in err and "answer_column" in err and "正確答案" in err


def test_empty_data_fails_clearly(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert main(["recipes/tiny/abstractive.yaml", "--dataset_path", str(empty), "--output_dir",
                 str(tmp_path / "r")]) == 2
    assert "empty.jsonl" in capsys.readouterr().err


def test_answer_not_in_context_names_row(tmp_path, capsys):
    data = json.loads((ROOT / "data/tiny/squad_tiny.json").read_text(encoding="utf-8"))
    qa = data["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"] = [{"text": "a sentence that is not there", "answer_start": 3}]
    bad = tmp_path / "squad_bad.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    assert main(["recipes/tiny/extractive.yaml", "--dataset_path", str(bad), "--validation_size", "0",
                 "--output_dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert qa["id"] in err and "does not occur in its context" in err


@pytest.mark.parametrize("line, words", [
    ("max_steps: [1, 2]", ["max_steps", "whole number"]),
    ("lora_r: 8.5", ["lora_r", "whole number"]),
    ("per_device_eval_batch_size: 0", ["per_device_eval_batch_size", ">= 1"]),
    ("lora_dropout: 1.5", ["lora_dropout", "<= 1"]),
    ("learning_rate: -0.1", ["learning_rate", ">= 0"]),
    ("learning_rate: fast", ["learning_rate", "a number"]),
    ("option_labels: [1, 2, 3, 4]", ["option_labels", "list of strings"]),
    ("lr_scheduler_type: cosinee", ["lr_scheduler_type", "cosine_with_restarts"]),
    ("bf16: maybe", ["bf16", "true/false"]),
    ("max_train_samples: 0", ["max_train_samples", ">= 1"]),
    ("learning_rate: .inf", ["learning_rate", "not a finite number"]),
    ("seed: 99999999999999999999999", ["seed", "<= 4294967295"]),
    ("split_seed: 99999999999999999999999", ["split_seed", "<= 4294967295"]),
    ("max_steps: 0\nnum_train_epochs: 0", ["max_steps: 0", "num_train_epochs: 0", "trains no step"]),
    ("seed: 1\nseed: 2", ["`seed` is written twice", "(lines 41 and 42)"]),
    ("env: {HF_HUB_OFFLINE: '0', GENQA_CACHE: /tmp/x, TOKENIZERS_PARALLELISM: 'false'}",
     ["env:", "GENQA_CACHE, HF_HUB_OFFLINE", "export HF_HUB_OFFLINE"]),
    ("model_init_kwargs: " + "[" * 20000 + "]" * 20000, ["nested too deeply"]),
])
def test_wrong_typed_or_out_of_range_values_fail_the_dry_run(tmp_path, capsys, line, words):
    key = line.split(":")[0]
    text = "".join(x for x in (ROOT / "recipes/tiny/mcq.yaml").read_text(encoding="utf-8").splitlines(True)
                   if not x.startswith(f"{key}:"))
    (tmp_path / "r.yaml").write_text(text + line + "\n", encoding="utf-8")
    assert main([str(tmp_path / "r.yaml"), "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert "r.yaml" in err and all(w in err for w in words), err


def test_billion_laughs_is_refused_without_expanding(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    body = "\n".join("  " + line for line in lines)
    (tmp_path / "r.yaml").write_text(f"model_init_kwargs:\n{body}\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="r.yaml: expands to more than 100,000 values through YAML aliases"):
        parse_recipe([str(tmp_path / "r.yaml"), "--dry_run", "true"])


def test_a_recipe_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "r.yaml").write_bytes(b"instruction: " + "答".encode("gbk") + b"\n")
    with pytest.raises(RecipeError, match=r"r.yaml: not UTF-8 text \(byte 13"):
        parse_recipe([str(tmp_path / "r.yaml")])


def test_yaml_strings_that_argparse_converts_are_accepted(tmp_path):
    text = (ROOT / "recipes/tiny/mcq.yaml").read_text(encoding="utf-8").replace("learning_rate: 0.002",
                                                                               "learning_rate: 1e-4")
    (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
    assert parse_recipe([str(tmp_path / "r.yaml")])[1].learning_rate == 1e-4


def test_command_line_type_error_is_a_recipe_error():
    with pytest.raises(RecipeError, match="max_steps.*invalid int value: 'abc'"):
        parse_recipe(["recipes/tiny/mcq.yaml", "--max_steps", "abc"])
    with pytest.raises(RecipeError, match="per_device_train_batch_size: -1"):
        parse_recipe(["recipes/tiny/mcq.yaml", "--per_device_train_batch_size", "-1"])


def test_gguf_file_key_names_a_file_in_a_folder_or_a_hub_repo(tmp_path, monkeypatch):
    from genqa.backbones import loading

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    seen = []
    monkeypatch.setattr(loading, "convert_gguf", lambda path: seen.append(Path(path)) or "converted-folder")
    _, _, model, _ = parse_recipe(["recipes/tiny/extractive.yaml", "--model_name_or_path", str(tmp_path),
                                   "--gguf_file", "m.gguf"])
    assert model.model_name_or_path == f"{tmp_path}/m.gguf"
    loading.check_model_name(model.model_name_or_path)
    assert loading.resolve_model_path(model.model_name_or_path) == "converted-folder"
    assert seen == [tmp_path / "m.gguf"]
    # a hub repo: the file is fetched through the hub client, then converted the same way
    hub = {("owner/repo", "q/m.gguf"): str(tmp_path / "m.gguf")}
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda repo, filename: hub[repo, filename])
    assert loading.resolve_model_path("owner/repo/q/m.gguf") == "converted-folder"


def test_gguf_file_missing_or_unreachable_is_a_recipe_error(tmp_path):
    from genqa.backbones.loading import check_model_name, resolve_model_path

    with pytest.raises(RecipeError, match=r"no such \.gguf file"):
        check_model_name(str(tmp_path / "x.gguf"))
    with pytest.raises(RecipeError, match=r"no such \.gguf file"):
        resolve_model_path("x.gguf")
    with pytest.raises(RecipeError, match="could not fetch m.gguf from the hub repo owner/repo"):
        resolve_model_path("owner/repo/m.gguf")  # offline in the tests (HF_HUB_OFFLINE=1)


@pytest.mark.parametrize(("name", "words"), [("pkg:  ", "names no package"),
                                              ("pkg:pytest", "the package `pytest` holds no model")])
def test_package_names_are_checked_and_resolved_by_one_rule(name, words):
    """`--dry_run`'s check and the loader parse a `pkg:` name in one place and refuse it with the same message."""
    from genqa.backbones.loading import check_model_name, resolve_package_model
    from genqa.recipe import RecipeError

    messages = []
    for step in (check_model_name, resolve_package_model):
        with pytest.raises(RecipeError) as err:
            step(name)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and words in messages[0]
