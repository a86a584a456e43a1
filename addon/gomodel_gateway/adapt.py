"""Request adaptation per model family: output-token budgets and parameter renames, as tables.

Reasoning models on Oracle (openai.gpt-oss-*, grok reasoning variants) spend part of the output
budget thinking; with a small `max_tokens` they return nothing but `finish_reason: "length"`.
A `min_output_tokens` rule raises such a budget before the call; `starved` recognises an answer
that still came back empty, so the gateway can say why. Rules match model ids with shell-style
patterns (fnmatch); the most specific layer wins: built-in < top-level config < provider.
"""

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Known reasoning families: what a too-small budget starves.
DEFAULT_MIN_OUTPUT_TOKENS: Mapping[str, int] = {
    "openai.gpt-oss-*": 1024,
    "xai.grok-*reasoning*": 1024,
}


@dataclass(frozen=True)
class ModelRules:
    """Per model-id pattern: the smallest output budget, and request parameters to rename."""

    min_output_tokens: tuple[tuple[str, int], ...] = tuple(DEFAULT_MIN_OUTPUT_TOKENS.items())
    parameter_map: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    def minimum_for(self, model: str) -> int | None:
        """The last matching rule wins (later layers are appended after earlier ones)."""
        found = None
        for pattern, minimum in self.min_output_tokens:
            if fnmatch.fnmatchcase(model, pattern):
                found = minimum
        return found

    def renames_for(self, model: str) -> dict[str, str]:
        renames: dict[str, str] = {}
        for pattern, pairs in self.parameter_map:
            if fnmatch.fnmatchcase(model, pattern):
                renames.update(pairs)
        return renames

    def layered(self, other: "ModelRules") -> "ModelRules":
        """These rules with `other`'s on top."""
        return ModelRules(
            self.min_output_tokens + other.min_output_tokens,
            self.parameter_map + other.parameter_map,
        )


def adapt(document: dict[str, Any], model: str, rules: ModelRules) -> list[str]:
    """Rename parameters and raise a too-small output budget, in place; what changed, in words."""
    changes = []
    for source, target in rules.renames_for(model).items():
        if source in document and target not in document:
            document[target] = document.pop(source)
            changes.append(f"{source} -> {target}")
    minimum = rules.minimum_for(model)
    if minimum is not None:
        for key in OUTPUT_LIMITS:
            value = document.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < minimum:
                document[key] = minimum
                changes.append(f"{key} {value} -> {minimum}")
    return changes


def starved(document: Any) -> bool:
    """An answer cut off by its output budget before any visible text or tool call (chat or
    responses)."""
    if not isinstance(document, dict):
        return False
    choices = document.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or {}
        said = message.get("content") or message.get("tool_calls")
        return choices[0].get("finish_reason") == "length" and not said
    details = document.get("incomplete_details")
    if document.get("status") == "incomplete" and isinstance(details, dict):
        outputs = [i for i in document.get("output") or [] if isinstance(i, dict)]
        if any(item.get("type") == "function_call" for item in outputs):
            return False
        text = "".join(
            part.get("text", "")
            for item in document.get("output") or []
            if isinstance(item, dict)
            for part in item.get("content") or []
            if isinstance(part, dict)
        )
        return details.get("reason") == "max_output_tokens" and not text
    return False


STARVED_WARNING = (
    "Oracle spent the whole output budget before answering (reasoning models think first): "
    "raise max_tokens / max_output_tokens, or the gateway's min_output_tokens for this model."
)
