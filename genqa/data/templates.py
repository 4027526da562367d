"""Prompt templates: Jinja chat templates in `templates/`, rendered with the tokenizer's own chat-template engine.

Every template renders a conversation (`messages`); genqa splits the rendering of [system, user, assistant] into the
prompt (everything up to the assistant's answer, the same text that generation starts from) and the completion (the
answer plus the template's end-of-turn token), which is the only part trained. The shipped templates also carry
`{% generation %}` markers, so TRL's `assistant_only_loss` works with them on `messages` data.

A template is compiled when it is loaded (so `--dry_run` reports a Jinja syntax error with its line) and rendered in
transformers' sandbox; a syntax error, an unreadable file, or a template the sandbox blocks (`{{ x.__class__ }}`)
or that fails while rendering is a `TemplateError` naming the template, never a Jinja traceback.
"""

from __future__ import annotations

import functools
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


def check_template(source: str, name: str) -> str:
    """`source` when transformers' chat-template engine compiles it and renders a plain user/assistant exchange with
    it, else a `TemplateError` naming `name` (and the line of a Jinja syntax error)."""
    import jinja2
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        compiled = _compile_jinja_template(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"template {name}: Jinja syntax error on line {err.lineno}: {err.message}") from err
    sample = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    tokens = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    try:
        compiled.render(messages=sample, add_generation_prompt=False, **tokens)
        compiled.render(messages=sample[:1], add_generation_prompt=True, **tokens)
    except jinja2.UndefinedError:
        pass  # a variable the tokenizer supplies at render time; render() reports it if it stays undefined
    except jinja2.TemplateError as err:  # the sandbox (SecurityError), raise_exception
        raise TemplateError(f"template {name} fails on a plain user/assistant conversation: "
                            f"{type(err).__name__}: {err}") from err
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
