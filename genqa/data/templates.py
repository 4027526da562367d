"""Prompt templates: Jinja chat templates in `templates/`, rendered with the tokenizer's own chat-template engine.

Every template renders a conversation (`messages`); genqa splits the rendering of [system, user, assistant] into the
prompt (everything up to the assistant's answer, the same text that generation starts from) and the completion (the
answer plus the template's end-of-turn token), which is the only part trained. The shipped templates also carry
`{% generation %}` markers, so TRL's `assistant_only_loss` works with them on `messages` data.

A template is compiled when it is loaded (so `--dry_run` reports a Jinja syntax error with its line) and rendered in
transformers' sandbox; a syntax error, an unreadable file, a template the sandbox blocks (`{{ x.__class__ }}`),
one that includes or imports another, one over `TEMPLATE_LIMITS` on a sample conversation (output size, `range`
items, a huge `'x' * N`, render time) or that fails while rendering is a `TemplateError` naming the template, never a
Jinja traceback or a hang.
"""

from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from genqa.errors import GenqaError
from genqa.resources import resource_dir

TEMPLATE_DIR = resource_dir("templates")
_SENTINEL = "\u2063GENQA_ANSWER\u2063"


class TemplateError(GenqaError, ValueError):
    """A template that cannot be used; the message names it and says what to do."""


def available_templates() -> list[str]:
    """Names of the templates shipped in `templates/`."""
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.jinja"))


def template_path(name: str) -> Path | None:
    """The file behind a template name or path (None for `tokenizer`)."""
    if name == "tokenizer":
        return None
    p = Path(name)
    if p.suffix == ".jinja" or p.is_file():
        if not p.is_file():
            raise TemplateError(f"template file {name} not found.")
        return p
    path = TEMPLATE_DIR / f"{name}.jinja"
    if not path.is_file():
        raise TemplateError(f"unknown template {name!r}. Shipped templates: {', '.join(available_templates())}; or "
                            "give a path to a .jinja file, or `tokenizer` for the tokenizer's own chat template.")
    return path


@functools.lru_cache(maxsize=32)
def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TemplateError(f"template file {path} is not UTF-8 text ({err}).") from err


#: what a template may cost when genqa tries it on a sample conversation: characters rendered, `range` items in all,
#: the size of one `*` / `**` result, seconds
TEMPLATE_LIMITS = {"output": 1_000_000, "range": 100_000, "value": 1_000_000, "seconds": 5.0}


def _transformers_environment():
    """transformers' chat-template environment (its sandbox, `{% generation %}` tag, filters and globals)."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    return _compile_jinja_template("").environment


def _refuse_loaders(source: str, name: str) -> None:
    """A template is one file: `{% include %}`, `{% import %}` and `{% extends %}` have nothing to load from."""
    import jinja2
    from jinja2 import nodes

    try:
        tree = _transformers_environment().parse(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"template {name}: Jinja syntax error on line {err.lineno}: {err.message}") from err
    for kind, word in ((nodes.Include, "include"), (nodes.Import, "import"), (nodes.FromImport, "from ... import"),
                       (nodes.Extends, "extends")):
        found = next(iter(tree.find_all(kind)), None)
        if found is not None:
            raise TemplateError(f"template {name}, line {found.lineno}: `{{% {word} %}}` is not allowed; a chat "
                                "template is one self-contained file. Paste the other template's text in its place.")


def _refuse_large_constants(source: str, name: str) -> None:
    """Jinja folds constant expressions while compiling, in every branch, taken or not: a `*` or `**` of constants
    whose result would be over `TEMPLATE_LIMITS['value']` (or an exponent over 64) is refused before anything
    compiles it, naming the template and the line."""
    from jinja2 import nodes

    limit = TEMPLATE_LIMITS["value"]
    found = list(_transformers_environment().parse(source).find_all((nodes.Mul, nodes.Pow)))
    for node in reversed(found):  # pre-order reversed: every operand is checked before the node that uses it
        try:
            left, right = node.left.as_const(), node.right.as_const()
        except (nodes.Impossible, ArithmeticError, TypeError, ValueError):
            continue  # not a constant: computed at render time, under the limited sandbox's own checks
        if isinstance(node, nodes.Pow):
            problem = (f"`** {right}`: exponent too large" if isinstance(right, int | float) and abs(right) > 64
                       and left not in (0, 1, -1) else None)
        else:
            seq, n = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            size = len(seq) * n if isinstance(seq, str | list | tuple) and isinstance(n, int) else 0
            problem = f"a value of {size:,} items (`* {n}`) is over the limit of {limit:,}" if size > limit else None
        if problem:
            raise TemplateError(f"template {name}, line {node.lineno}: constant {problem} (Jinja computes constants "
                                "while compiling, even in a branch never taken); remove it.")


def _limited_environment():
    """transformers' sandbox with limits: `*` and `**` are computed at render time (never constant-folded while
    compiling) and refused past `TEMPLATE_LIMITS['value']`, and `range` shares one budget of items per render."""
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    base = _transformers_environment()

    class Limited(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context, operator, left, right):
            if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
                raise SecurityError(f"`** {right}`: exponent too large")
            if operator == "*":
                seq, n = (left, right) if isinstance(left, str | list | tuple) else (right, left)
                size = len(seq) * n if isinstance(seq, str | list | tuple) and isinstance(n, int) else 0
                if size > TEMPLATE_LIMITS["value"]:
                    raise SecurityError(f"a value of {size:,} items (`* {n}`) is over the limit of "
                                        f"{TEMPLATE_LIMITS['value']:,}")
            return super().call_binop(context, operator, left, right)

    env = Limited(trim_blocks=True, lstrip_blocks=True, extensions=[type(e) for e in base.extensions.values()])
    env.filters.update(base.filters)
    env.globals.update(base.globals)
    budget = [TEMPLATE_LIMITS["range"]]

    def limited_range(*args):
        items = range(*args)
        budget[0] -= len(items)
        if budget[0] < 0:
            raise SecurityError(f"`range` over more than {TEMPLATE_LIMITS['range']:,} items in all")
        return items

    env.globals["range"] = limited_range
    return env


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise `TimeoutError` after `seconds` (main thread only: elsewhere no limit)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _try_render(source: str, name: str) -> None:
    """Render a plain user/assistant exchange under `TEMPLATE_LIMITS`; a template over them is a `TemplateError`."""
    import jinja2

    compiled = _limited_environment().from_string(source)
    sample = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    tokens = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    limit = TEMPLATE_LIMITS["output"]
    try:
        with _time_limit(TEMPLATE_LIMITS["seconds"]):
            for messages, prompt in ((sample, False), (sample[:1], True)):
                size = 0
                for chunk in compiled.generate(messages=messages, add_generation_prompt=prompt, **tokens):
                    size += len(chunk)
                    if size > limit:
                        raise jinja2.exceptions.SecurityError(f"it renders more than {limit:,} characters")
    except TimeoutError:
        raise TemplateError(f"template {name} takes more than {TEMPLATE_LIMITS['seconds']:g} s to render a one-line "
                            "conversation (loops too large); simplify it.") from None
    except jinja2.UndefinedError:
        pass  # a variable the tokenizer supplies at render time; render() reports it if it stays undefined
    except (jinja2.TemplateError, OverflowError, MemoryError) as err:  # limits, the sandbox, raise_exception
        raise TemplateError(f"template {name} fails on a plain user/assistant conversation: "
                            f"{type(err).__name__}: {err}") from err


def check_template(source: str, name: str) -> str:
    """`source` when it loads nothing (`_refuse_loaders`), transformers' chat-template engine compiles it, and it
    renders a plain user/assistant exchange within `TEMPLATE_LIMITS` in the same sandbox, else a `TemplateError`
    naming `name` (and the line of a Jinja syntax error). Its constant `*` / `**` are checked on the parsed tree
    (`_refuse_large_constants`) before transformers compiles it, so a constant such as `'x' * 3000000000` is refused
    in any branch, never folded."""
    import jinja2
    from transformers.utils.chat_template_utils import _compile_jinja_template

    _refuse_loaders(source, name)
    _refuse_large_constants(source, name)
    _try_render(source, name)
    try:
        _compile_jinja_template(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"template {name}: Jinja syntax error on line {err.lineno}: {err.message}") from err
    return source


def load_template(name: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """The Jinja source of template `name` (a shipped name, a .jinja path, or `tokenizer`)."""
    path = template_path(name)
    if path is not None:
        return check_template(_read(path), str(path))
    if tokenizer is None:
        return ""  # resolved once a tokenizer is loaded
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("template: `tokenizer` asks for the tokenizer's own chat template, but this tokenizer has "
                            f"none. Choose one of {', '.join(available_templates())}.")
    return check_template(tokenizer.chat_template, "`tokenizer` (the tokenizer's own chat template)")


def render(tokenizer: PreTrainedTokenizerBase, template: str, messages: list[dict[str, str]],
           add_generation_prompt: bool) -> str:
    """Render `messages` with `template` through the tokenizer's chat-template engine (text, not ids)."""
    import jinja2

    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except jinja2.TemplateError as err:  # syntax, sandbox (SecurityError), undefined or raise_exception errors
        first = next((line for line in template.splitlines() if line.strip()), "")[:60]
        raise TemplateError(f"the chat template (starting {first!r}) failed to render: {type(err).__name__}: {err}. "
                            "Fix the template (genqa renders it in transformers' Jinja sandbox).") from err


#: transformers' `{% generation %}` / `{% endgeneration %}` tags, with their whitespace control
_GENERATION_TAG = re.compile(r"\{%(-?)\s*(end)?generation\s*(-?)%\}")


def portable_template(template: str) -> str:
    """`template` for Jinja engines without transformers' `{% generation %}` extension (llama.cpp's, Jinja2's own):
    each marker becomes an `if true` block with the same whitespace control, so it renders the same text."""
    return _GENERATION_TAG.sub(lambda m: f"{{%{m[1]} {'endif' if m[2] else 'if true'} {m[3]}%}}", template)


def split_prompt_completion(tokenizer: PreTrainedTokenizerBase, template: str,
                            messages: list[dict[str, str]]) -> tuple[str, str]:
    """Split a rendered conversation ending in the assistant's answer into (prompt, completion)."""
    if not messages or messages[-1]["role"] != "assistant":
        raise TemplateError("split_prompt_completion needs a conversation that ends with the assistant's answer.")
    prompt = render(tokenizer, template, messages[:-1], add_generation_prompt=True)
    full = render(tokenizer, template, messages, add_generation_prompt=False)
    if not full.startswith(prompt):
        raise TemplateError("the template renders the prompt differently with and without the answer, so the answer "
                            "cannot be separated from it; make the assistant turn a pure suffix of the prompt "
                            "rendered with add_generation_prompt=True.")
    completion = full[len(prompt):]
    if not completion.strip():
        raise TemplateError("the template renders nothing for the assistant's answer, so response-only loss would mask "
                            "every token. Render the assistant message's content in the template.")
    return prompt, completion


def end_of_turn(tokenizer: PreTrainedTokenizerBase, template: str) -> str:
    """What the template writes after an answer (e.g. `<|eot_id|>`, `</s>`); generation stops there."""
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": _SENTINEL}]
    _, completion = split_prompt_completion(tokenizer, template, msgs)
    if _SENTINEL not in completion:
        raise TemplateError("the template changes the assistant's answer text; genqa needs it rendered verbatim.")
    return completion.split(_SENTINEL, 1)[1]
