"""Chat templates: how a conversation (`[{"role": ..., "content": ...}, ...]`) becomes one text for a causal LM.

A causal LM's tokenizer (its record's `TokenizerSpec.chat_template`) gets `DEFAULT_CHAT_TEMPLATE` when it has none,
so `tokenizer.apply_chat_template`, TRL's `SFTTrainer` on {"messages": [...]} rows and `transformers chat` work on a
fourfold checkpoint as they are. It adds no tokens (the vocabulary stays the model's): each turn is a plain-text role
tag on its own line, then the content; an assistant turn ends with the eos token, so the model learns to stop:

    <s><|system|>
    Be brief.
    <|user|>
    Hello?
    <|assistant|>
    Hi.</s>
    <|assistant|>          <- add_generation_prompt=True: where the model continues

The assistant's content and its eos sit inside `{% generation %}` markers, so `return_assistant_tokens_mask` (TRL's
`assistant_only_loss=True`) trains on exactly those tokens; on a prefix LM the turns before an answer then become
the bidirectional prefix (`prefix_from_labels`). Earlier turns render the same whatever follows (prefix-preserving).

`--chat_template` (pretrain and finetune) replaces it: a path to a Jinja file, or the template itself.
"""

from pathlib import Path

import jinja2
from jinja2 import ext, nodes, parser
from transformers import PreTrainedTokenizerBase

from fourfold.training.errors import UsageError

DEFAULT_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{- message['content'] + eos_token -}}{% endgeneration %}{{- '\n' -}}"
    "{%- else -%}"
    "{{- message['content'] + '\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
)


def resolve_chat_template(value: str) -> str:
    """The template `--chat_template VALUE` means: the text of a file at that path, or VALUE itself when it is a
    Jinja template (holds `{{` or `{%`). Raises `UsageError` for anything else, or a template Jinja cannot parse."""
    path = Path(value)
    if "{{" not in value and "{%" not in value:
        if not path.is_file():
            raise UsageError(
                f"--chat_template {value!r} is neither a file nor a Jinja template",
                "pass a path to a .jinja file, or the template itself ({% for message in messages %}...)",
            )
        value = path.read_text(encoding="utf-8")
    try:
        # transformers renders with the `{% generation %}` extension; a bare environment would refuse that tag.
        jinja2.Environment(extensions=[_GenerationTag]).parse(value)
    except jinja2.TemplateSyntaxError as error:
        raise UsageError(
            f"--chat_template does not parse as Jinja (line {error.lineno}: {error.message})", "fix the template"
        ) from error
    return value


def set_chat_template(tokenizer: PreTrainedTokenizerBase, value: str | None, default: str | None) -> None:
    """Gives `tokenizer` the `--chat_template` (`value`, resolved), else `default` where it has no template yet;
    `save_pretrained` then writes it (chat_template.jinja)."""
    if value is not None:
        tokenizer.chat_template = resolve_chat_template(value)
    elif tokenizer.chat_template is None and default is not None:
        tokenizer.chat_template = default


class _GenerationTag(ext.Extension):
    """Parses `{% generation %}...{% endgeneration %}` (transformers' assistant-mask markers) for the syntax check."""

    tags = frozenset({"generation"})

    def parse(self, stream_parser: parser.Parser) -> nodes.Node:
        lineno = next(stream_parser.stream).lineno
        body = stream_parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)
