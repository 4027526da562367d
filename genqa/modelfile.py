"""The Ollama `Modelfile` and the how-to-run README that go beside an exported GGUF file.

Ollama does not run Jinja: its `TEMPLATE` is a Go template over `.System` and `.Prompt`. genqa prompts are one
conversation of an optional system turn and one user turn, so the Go template is the run's own chat template
*rendered* (by the same engine training used) around two placeholders, which then become `{{ .System }}` and
`{{ .Prompt }}`: filled with the system prompt and the user message, it is the very prompt `genqa predict` sends.
A leading BOS text is left out where the GGUF tokenizer adds BOS itself (llama.cpp and Ollama add it, as genqa's
encoder does), so the prompt never starts with two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from genqa.errors import GenqaError

SYSTEM_MARK = "\ue000genqa-system\ue000"
PROMPT_MARK = "\ue001genqa-prompt\ue001"


class ModelfileError(GenqaError, ValueError):
    """A chat template that cannot be written as an Ollama template."""


@dataclass
class OllamaTemplate:
    """The run's prompt as Ollama writes it."""

    template: str  #: Go template over `.System` / `.Prompt`
    system: str | None  #: the run's system prompt (Modelfile `SYSTEM`), None when it has none
    stops: list[str]  #: texts that end an answer (the template's end-of-turn token, EOS)

    def fill(self, prompt: str) -> str:
        """What Ollama sends for user message `prompt` (used to check the template against genqa's own prompt)."""
        return self.template.replace("{{ .System }}", self.system or "").replace("{{ .Prompt }}", prompt).replace(
            '{{ "{{" }}', "{{")


def go_literal(text: str) -> str:
    """Template text with a literal `{{` kept literal in Go's template syntax."""
    return text.replace("{{", '{{ "{{" }}')


def ollama_template(tokenizer, template: str, system: str | None, end_text: str, add_bos: bool) -> OllamaTemplate:
    """The Go template of chat template `template` for a run with system prompt `system`."""
    from genqa.data.templates import render

    messages = ([{"role": "system", "content": SYSTEM_MARK}] if system else []) + [
        {"role": "user", "content": PROMPT_MARK}]
    text = render(tokenizer, template, messages, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if add_bos and bos and text.startswith(bos):
        text = text[len(bos):]
    if text.count(PROMPT_MARK) != 1 or text.count(SYSTEM_MARK) != (1 if system else 0):
        raise ModelfileError("the chat template does not write the user message (and the system prompt) exactly once "
                             "verbatim, so it has no Ollama TEMPLATE equivalent. Use the GGUF file with llama.cpp, "
                             "whose chat template is the run's own.")
    go = go_literal(text).replace(SYSTEM_MARK, "{{ .System }}").replace(PROMPT_MARK, "{{ .Prompt }}")
    stops = [s for s in dict.fromkeys([end_text.strip(), tokenizer.eos_token or ""]) if s]
    return OllamaTemplate(go, system, stops)


def modelfile_text(gguf_name: str, tmpl: OllamaTemplate) -> str:
    """The `Modelfile` for `ollama create`: the GGUF file beside it, the template, greedy decoding, stop tokens."""
    if '"""' in tmpl.template or (tmpl.system and '"""' in tmpl.system):
        raise ModelfileError('the chat template or system prompt contains """, which a Modelfile cannot quote.')
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{tmpl.template}"""']
    if tmpl.system:
        lines.append(f'SYSTEM """{tmpl.system}"""')
    lines.append("PARAMETER temperature 0")  # genqa predicts greedily
    lines.extend(f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in tmpl.stops)
    return "\n".join(lines) + "\n"


def readme_text(gguf_name: str, modelfile_name: str | None, report: dict) -> str:
    """How to run the export with llama.cpp and Ollama (`modelfile_name` None: no Modelfile could be written), and
    what was checked."""
    stem = gguf_name.removesuffix(".gguf")
    check = report["check"]
    ollama = f"""```bash
ollama create {stem} -f {modelfile_name}
ollama run {stem}
```""" if modelfile_name else ("No Modelfile: the run's chat template has no Ollama TEMPLATE equivalent (it does not "
                               "write the user message exactly once verbatim). Use llama.cpp, which applies the "
                               "run's own template from the file.")
    return f"""# {gguf_name}

Exported by `genqa export` from `{report['model']}` (base `{report['base']}`, task `{report['task']}`,
quantization `{report['quant']}`). The file carries the chat template the run trained with, its end-of-turn token as
a stop token, and genqa's metadata under `genqa.*` keys.

## llama.cpp

```bash
llama-cli -m {gguf_name} -cnv --temp 0          # chat: the file's own chat template is applied
llama-server -m {gguf_name} --port 8080         # OpenAI-compatible server: POST /v1/chat/completions
```

## Ollama

{ollama}

Send the user message exactly as genqa builds it (`genqa preview RECIPE` shows it: instruction, context, question,
options); the system prompt is in the Modelfile.

## Checked at export

Read back through transformers' GGUF loader: max |logit diff| vs the merged model {check['max_abs_logit_diff']:.3g}
(tolerance {check['tolerance']:.3g}) on {check['rows']} validation rows; greedy answers identical on
{check['greedy_same']}/{check['greedy_rows']} rows; tokenization identical on every checked prompt.
"""
