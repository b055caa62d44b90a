"""The agent file (``AGENT_FILE``): one YAML file that describes a business's phone agent.

It holds the greeting, the system prompt, the fixed lines, the transfer number and the
phrases that ask for a person, and the FAQ (questions/keywords -> answer). With an LLM the
file supplies the prompt (with the FAQ appended as the facts to answer from) and the
lines; with ``LLM_PROVIDER=local`` the FAQ agent (:mod:`pipeline.providers.faq_agent`)
answers from the FAQ directly. ``agents/example.yaml`` documents every field.

YAML rather than TOML: comments and multi-line answers read naturally for the people who
edit these files, and PyYAML gives every value's line, so a schema error names its line:
``agents/shop.yaml line 14: faq[1].answer: field required``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from pipeline.agent import AgentConfig

DEFAULT_NO_MATCH = "I can help with {topics}. What would you like to know?"


class AgentFileError(ValueError):
    """The agent file cannot be used; the message names the file and the line."""


# --- the schema ----------------------------------------------------------------------

Text = StrictStr  # a number where text belongs (e.g. an unquoted +91... phone number) is an error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class _Lines(_Strict):
    fallback: Text | None = Field(None, min_length=1)
    goodbye: Text | None = Field(None, min_length=1)
    handoff: Text | None = Field(None, min_length=1)
    unavailable: Text | None = Field(None, min_length=1)
    no_match: Text = Field(DEFAULT_NO_MATCH, min_length=1)


class _Transfer(_Strict):
    number: Text | None = Field(None, pattern=r"^\+?[0-9][0-9 -]{5,19}$")
    phrases: list[Text] = Field(default_factory=list)


class _Faq(_Strict):
    topic: Text = Field(min_length=1)
    answer: Text = Field(min_length=1)
    questions: list[Text] = Field(default_factory=list)
    keywords: list[Text] = Field(default_factory=list)

    @model_validator(mode="after")
    def _matchable(self) -> _Faq:
        if not self.questions and not self.keywords:
            raise ValueError("give at least one of questions or keywords")
        return self


class _AgentFile(_Strict):
    name: Text = Field(min_length=1)
    greeting: Text | None = Field(None, min_length=1)
    system_prompt: Text | None = Field(None, min_length=1)
    lines: _Lines = Field(default_factory=_Lines)
    transfer: _Transfer = Field(default_factory=_Transfer)
    faq: list[_Faq] = Field(default_factory=list)


# --- what the rest of the code sees --------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaqEntry:
    topic: str  # how the agent names it: "I can help with <topic>, <topic> ..."
    answer: str
    questions: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentFile:
    path: Path
    name: str
    greeting: str | None
    system_prompt: str | None
    fallback_line: str | None
    goodbye_line: str | None
    handoff_line: str | None
    unavailable_line: str | None
    no_match_line: str
    transfer_number: str | None
    transfer_phrases: tuple[str, ...]
    faq: tuple[FaqEntry, ...]

    def apply(self, config: AgentConfig) -> AgentConfig:
        """The agent config with everything this file sets (the environment fills the rest)."""
        changes: dict[str, Any] = {
            "greeting": self.greeting,
            "fallback_line": self.fallback_line,
            "goodbye_line": self.goodbye_line,
            "transfer_line": self.handoff_line,
            "unavailable_line": self.unavailable_line,
            "transfer_number": self.transfer_number,
        }
        prompt = self.system_prompt or config.system_prompt
        changes["system_prompt"] = prompt + self.faq_context()
        return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})

    def faq_context(self) -> str:
        """The FAQ as facts for an LLM's system prompt ('' without FAQ or transfer phrases)."""
        parts = []
        if self.faq:
            facts = "\n".join(f"- {entry.topic}: {entry.answer}" for entry in self.faq)
            parts.append(
                f"\n\nFacts about {self.name} (answer from these; do not invent others):\n{facts}"
            )
        if self.transfer_phrases and self.transfer_number:
            said = ", ".join(f'"{p}"' for p in self.transfer_phrases)
            parts.append(f"\nTransfer the caller to a person when they ask, e.g. {said}.")
        return "".join(parts)


# --- loading ---------------------------------------------------------------------------


def load_agent_file(path: Path | str) -> AgentFile:
    """Read and check an agent file; AgentFileError says what is wrong and on which line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentFileError(f"{path}: cannot read the agent file: {exc}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise AgentFileError(f"{path}{where}: not valid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise AgentFileError(f"{path} line 1: expected a mapping of fields (name, greeting, faq…)")
    try:
        model = _AgentFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = tuple(error["loc"])
        line = _line_of(root, location)
        raise AgentFileError(
            f"{path} line {line}: {_dotted(location) or 'file'}: {_message(error)}"
        ) from exc
    return _from_model(path, model)


def _from_model(path: Path, model: _AgentFile) -> AgentFile:
    return AgentFile(
        path=path,
        name=model.name,
        greeting=model.greeting,
        system_prompt=model.system_prompt,
        fallback_line=model.lines.fallback,
        goodbye_line=model.lines.goodbye,
        handoff_line=model.lines.handoff,
        unavailable_line=model.lines.unavailable,
        no_match_line=model.lines.no_match,
        transfer_number=model.transfer.number,
        transfer_phrases=tuple(model.transfer.phrases),
        faq=tuple(
            FaqEntry(e.topic, e.answer, tuple(e.questions), tuple(e.keywords)) for e in model.faq
        ),
    )


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field (check its spelling against agents/example.yaml)"
    if kind == "missing":
        return "field required"
    if kind == "string_type":
        return "must be text (put numbers such as phone numbers in quotes)"
    if kind in ("model_type", "dict_type"):
        return "expected fields (name: value lines), not a single value"
    if kind == "list_type":
        return "expected a list (lines starting with -, or [a, b])"
    if kind == "string_pattern_mismatch":
        return 'not a phone number (e.g. "+918045678900")'
    message: str = error["msg"]
    return message.removeprefix("Value error, ")


def _dotted(location: Sequence[Any]) -> str:
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(root: yaml.Node | None, location: Sequence[Any]) -> int:
    """1-based line of the YAML node at ``location`` (or of its nearest existing parent)."""
    node = root
    line = 1 if root is None else root.start_mark.line + 1
    for part in location:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next((pair for pair in node.value if pair[0].value == part), None)
            if match is None:
                return line  # a missing field: point at its parent
            key, node = match
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line  # a pydantic-internal location part (e.g. a union branch)
    return line
