"""The package's import graph follows the data flow: no cycle, and no stage imports a later one.

recipe → data (source → task → template → encoding) → run folder → backbones (train / predict) → the commands;
scoring is pure (it reads nothing from data but the MCQ layout it scores, and data never imports it).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "genqa"

# Lower number = earlier stage. A module may import its own stage or an earlier one.
STAGES = {
    "genqa.errors": 0, "genqa.files": 0, "genqa.resources": 0, "genqa.messages": 0, "genqa.config": 0,
    "genqa.locks": 0, "genqa.hardware": 0, "genqa.hub_names": 0,
    "genqa.recipe": 1,
    "genqa.data": 2,
    "genqa.scoring": 3,
    "genqa.run_dir": 4, "genqa.run_card": 4, "genqa.trainer_log": 4, "genqa.submission": 4, "genqa.stopping": 4,
    "genqa.backbones": 5,
}
#: modules whose stage differs from their package's: the backbone registry names the backbones and imports none
EXACT_STAGES = {"genqa.backbones": 0}
COMMANDS = 6  # sft, merge, generate, evaluate and any other top-level module


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """genqa modules imported anywhere in the file (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genqa"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("genqa"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _stage(module: str) -> int:
    if module in EXACT_STAGES:
        return EXACT_STAGES[module]
    for prefix, stage in sorted(STAGES.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return stage
    return COMMANDS


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_no_stage_imports_a_later_stage():
    wrong = [f"{m} imports {d}" for m, deps in _graph().items() for d in deps
             if _stage(d) > _stage(m)]
    assert not wrong, "\n".join(wrong)


def test_the_graph_sees_function_level_imports():
    graph = _graph()
    assert "genqa.backbones.loading" in graph["genqa.sft"]  # imported inside a function
    assert "genqa.data.sources" in graph["genqa.data.rows"]


def test_scoring_and_data_stay_apart():
    graph = _graph()
    data_to_scoring = [f"{m} -> {d}" for m, deps in graph.items() if m.startswith("genqa.data")
                       for d in deps if d.startswith("genqa.scoring")]
    scoring_to_data = [f"{m} -> {d}" for m, deps in graph.items() if m.startswith("genqa.scoring")
                       for d in deps if d.startswith("genqa.data") and d != "genqa.data.mcq_format"]
    assert not data_to_scoring and not scoring_to_data, data_to_scoring + scoring_to_data


#: what every backbone module carries (`genqa.backbones`' docstring): constants, then functions
BACKBONE_CONSTANTS = ("NAME", "AUTO_CLASS", "PIPELINE_TAG", "DEFAULT_MAX_LENGTH", "USES_TEMPLATE")
BACKBONE_FUNCTIONS = ("detects", "encoder", "check", "encode_splits", "load_model", "trainer", "after_training",
                      "prediction_settings", "predict", "check_batch")


def test_every_backbone_module_carries_the_whole_interface():
    from genqa.backbones import CHOICES, MODULES, get_backbone
    from genqa.config import BACKBONES

    assert BACKBONES == CHOICES == ("auto", *MODULES)  # the recipe's choices come from the registry
    for name in MODULES:
        module = get_backbone(name)
        missing = [a for a in BACKBONE_CONSTANTS if not hasattr(module, a)]
        missing += [f for f in BACKBONE_FUNCTIONS if not callable(getattr(module, f, None))]
        assert not missing, f"{name}: {missing}"
        assert module.NAME == name
    assert sum(bool(getattr(get_backbone(n), "FALLBACK", False)) for n in MODULES) == 1


def test_the_registry_detects_a_config_through_the_modules():
    from types import SimpleNamespace

    from genqa.backbones import backbone_of_config

    def config(**kw):
        return SimpleNamespace(**{"is_encoder_decoder": False, "architectures": None, "model_type": "llama", **kw})

    assert backbone_of_config(config(is_encoder_decoder=True, model_type="t5")) == "seq2seq"
    assert backbone_of_config(config(architectures=["BertForQuestionAnswering"], model_type="bert")) == "extractive"
    assert backbone_of_config(config(model_type="xlm-roberta")) == "extractive"
    assert backbone_of_config(config()) == "causal_lm"


def test_the_task_interface_knows_no_specific_task():
    assert not {d for d in _graph()["genqa.data.task"] if d.startswith("genqa.data.mcq_format")}


BACKBONE_NAMES = {"causal_lm", "seq2seq", "extractive"}
TASK_NAMES = {"extractive", "mcq", "mcq_generation", "abstractive"}
#: config.py defines the recipe key `task:` (its choices and default) at the lowest stage, which cannot import
#: genqa.data.tasks without an import cycle; `test_recipe_task_choices_are_the_task_registry` holds it to the registry.
#: starter.py (`genqa init`, from main) writes a recipe for the task a data file's header suggests: it names the tasks
#: it writes recipes for (not yet moved onto the task classes)
TASK_NAMES_ALLOWED = ("genqa/data/tasks.py", "genqa/scoring/", "genqa/config.py", "genqa/starter.py")


def _names_out_of_home(rel: str, source: str) -> list[str]:
    """String constants of file `rel` equal to a backbone name outside `genqa/backbones/`, or to a task name outside
    the task registry and scoring (`extractive` is both: it may stand in either home)."""
    in_backbones = rel.startswith("genqa/backbones/")
    in_tasks = rel.startswith(TASK_NAMES_ALLOWED)
    wrong = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        name = node.value
        if name in BACKBONE_NAMES | TASK_NAMES and not ((name in BACKBONE_NAMES and in_backbones)
                                                        or (name in TASK_NAMES and in_tasks)):
            wrong.append(f"{rel}:{node.lineno}: {name!r}")
    return wrong


def test_only_the_registries_name_backbones_and_tasks():
    from genqa.backbones import MODULES
    from genqa.data.tasks import TASK_CLASSES

    assert BACKBONE_NAMES == set(MODULES) and TASK_NAMES == set(TASK_CLASSES)
    wrong = [w for path in sorted(PACKAGE.rglob("*.py"))
             for w in _names_out_of_home(path.relative_to(PACKAGE.parent).as_posix(),
                                         path.read_text(encoding="utf-8"))]
    assert not wrong, "\n".join(wrong)


def test_the_names_check_sees_a_branch_on_a_name():
    assert _names_out_of_home("genqa/generate.py", 'if task.name == "mcq":\n    pass\n')
    assert _names_out_of_home("genqa/backbones/causal_lm.py", 'if task.name != "mcq_generation":\n    pass\n')
    assert _names_out_of_home("genqa/run_card.py", 'TAGS = {"seq2seq": "text2text-generation"}\n')
    assert not _names_out_of_home("genqa/backbones/seq2seq.py", 'NAME = "seq2seq"\n')


def test_recipe_task_choices_are_the_task_registry():
    from genqa.config import TASKS
    from genqa.data.tasks import TASK_CLASSES

    assert TASKS == tuple(TASK_CLASSES)
