"""The seed's ``POST /chat`` body and its translation into vLLM sampling parameters.

The old Kaito text-generation server took ``{"prompt": ...}`` or ``{"messages": [...]}`` with
Hugging Face ``generate_kwargs`` and answered ``{"Result": "<text>"}``. Its defaults are kept:
``max_length`` 200 (prompt included), sampling on with ``top_k`` 10, and for a prompt the answer
includes the prompt (``return_full_text``). ``max_new_tokens`` counts generated tokens only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_MAX_LENGTH = 200


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class GenerateKwargs(BaseModel):
    """The Hugging Face generation arguments the old server accepted (unknown names are errors)."""

    model_config = ConfigDict(extra="forbid")
    max_length: int | None = Field(default=None, ge=1)
    max_new_tokens: int | None = Field(default=None, ge=1)
    min_length: int | None = Field(default=None, ge=0)
    min_new_tokens: int | None = Field(default=None, ge=0)
    do_sample: bool = True
    temperature: float = Field(default=1.0, ge=0)
    top_k: int = Field(default=10, ge=-1)
    top_p: float = Field(default=1.0, gt=0, le=1)
    typical_p: float | None = None  # accepted, not used by vLLM
    repetition_penalty: float = Field(default=1.0, gt=0)
    num_beams: int = Field(default=1, ge=1, le=1)
    early_stopping: bool | None = None  # accepted, meaningless without beams
    seed: int | None = None
    stop: list[str] | None = None
    pad_token_id: int | None = None  # accepted, handled by the tokenizer
    eos_token_id: int | None = None  # accepted, handled by the tokenizer


class ChatBody(BaseModel):
    """``POST /chat``; exactly one of ``prompt`` and ``messages``."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = None
    messages: list[Message] | None = None
    model: str | None = None
    return_full_text: bool = True
    clean_up_tokenization_spaces: bool | None = None  # accepted for compatibility
    prefix: str | None = None  # accepted for compatibility
    handle_long_generation: str | None = None  # accepted for compatibility
    generate_kwargs: GenerateKwargs = Field(default_factory=GenerateKwargs)

    @model_validator(mode="after")
    def _one_input(self) -> ChatBody:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' (a string) or 'messages' (a list)")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' must not be empty")
        return self


def validation_message(err: ValidationError) -> str:
    """One line naming each bad field, e.g. ``generate_kwargs.temperature: ...``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "body"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def sampling_fields(kw: GenerateKwargs, prompt_tokens: int) -> dict[str, Any]:
    """OpenAI/vLLM request fields equivalent to the generate kwargs, given the prompt's length."""
    if kw.max_new_tokens is not None:
        max_tokens = kw.max_new_tokens
    else:
        max_tokens = max(1, (kw.max_length or DEFAULT_MAX_LENGTH) - prompt_tokens)
    if kw.min_new_tokens is not None:
        min_tokens = kw.min_new_tokens
    elif kw.min_length is not None:
        min_tokens = max(0, kw.min_length - prompt_tokens)
    else:
        min_tokens = 0
    fields: dict[str, Any] = {
        "max_tokens": max_tokens,
        "min_tokens": min(min_tokens, max_tokens),
        "temperature": kw.temperature if kw.do_sample else 0.0,
        "top_p": kw.top_p if kw.do_sample else 1.0,
        "top_k": kw.top_k if kw.do_sample and kw.top_k > 0 else -1,
        "repetition_penalty": kw.repetition_penalty,
    }
    if kw.seed is not None:
        fields["seed"] = kw.seed
    if kw.stop:
        fields["stop"] = kw.stop
    return fields
