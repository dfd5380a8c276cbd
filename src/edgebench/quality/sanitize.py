"""Strip what is not the answer: thinking blocks, channel markers and leaked chat-template tokens.

Validators read the sanitised text; the caller keeps the raw reply for the log. `stripped` names
what was removed (e.g. `think`, `gemma_channel`, `token:<|im_end|>`) so template leaks can be
counted per model — the seed's Gemma runs leaked `<|channel>thought` into every reply.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

__all__ = ["Sanitized", "sanitize"]


class Sanitized(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    stripped: list[str]


# `<think>…</think>` (DeepSeek, Qwen) and Mistral's `[THINK]…[/THINK]`.
_THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>|\[THINK\].*?\[/THINK\]", re.S | re.I)
_THINK_OPEN = re.compile(r"<(?:think|thinking|reasoning)>|\[THINK\]", re.I)
_THINK_CLOSE = re.compile(r"</(?:think|thinking|reasoning)>|\[/THINK\]", re.I)
# Gemma 4: `<|channel>thought … <channel|>answer`; an unclosed channel runs to the end.
_GEMMA_CHANNEL = re.compile(r"<\|channel>\w*.*?(?:<channel\|>|\Z)", re.S)
# gpt-oss "harmony": the analysis channel is thinking; the final-channel header is noise.
_HARMONY_ANALYSIS = re.compile(r"<\|channel\|>analysis<\|message\|>.*?(?:<\|end\|>|\Z)", re.S)
_HARMONY_FINAL = re.compile(r"(?:<\|start\|>assistant)?<\|channel\|>final<\|message\|>")
# A turn header the server failed to hide: the token plus the role word after it.
_ROLE_HEADER = re.compile(
    r"(?:<\|im_start\|>|<start_of_turn>|<\|turn>|<\|start\|>)(?:assistant|model|user|system)?[ \t]*\n?"
    r"|<\|start_header_id\|>\w*<\|end_header_id\|>\s*"
    r"|<\|(?:assistant|user|system)\|>\s*"
)
# Anything after an end-of-turn token belongs to a turn the model invented.
_END_TOKENS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|return|>",
    "<|END_OF_TURN_TOKEN|>",
    "<end_of_turn>",
    "<turn|>",
    "</s>",
    "<eos>",
)
_END = re.compile("|".join(re.escape(t) for t in _END_TOKENS))
_STRAY = re.compile(r"<\|[\w.-]+\|>|<\|\w+>|<\w+\|>|<start_of_turn>|<end_of_turn>|</?s>|<bos>|<eos>|<pad>")


def sanitize(raw: str, reasoning_content: str | None = None) -> Sanitized:
    """The answer part of `raw`; `reasoning_content` (the server's split-off thinking) helps spot echoes."""
    labels: list[str] = []

    def note(label: str) -> None:
        if label not in labels:
            labels.append(label)

    text = raw
    thought = (reasoning_content or "").strip()
    if thought and text.lstrip().startswith(thought):
        text = text.lstrip()[len(thought) :]
        note("reasoning_echo")

    text, n = _THINK_BLOCK.subn("", text)
    if n:
        note("think")
    close = _THINK_CLOSE.search(text)
    if close and not _THINK_OPEN.search(text, 0, close.start()):
        # The template opened <think> inside the prompt; the reply starts mid-thought.
        text = text[close.end() :]
        note("think")
    opened = _THINK_OPEN.search(text)
    if opened:
        text = text[: opened.start()]  # ran out of tokens while thinking: the rest is not an answer
        note("think_unclosed")

    text, n = _GEMMA_CHANNEL.subn("", text)
    if n:
        note("gemma_channel")
    text, n = _HARMONY_ANALYSIS.subn("", text)
    text, m = _HARMONY_FINAL.subn("", text)
    if n or m:
        note("harmony_channel")

    text, n = _ROLE_HEADER.subn("", text)
    if n:
        note("role_header")
    for match in _END.finditer(text):
        if text[: match.start()].strip():
            if text[match.end() :].strip():
                note("after_end_of_turn")
            note(f"token:{match.group()}")
            text = text[: match.start()]
            break

    def drop(match: re.Match[str]) -> str:
        note(f"token:{match.group()}")
        return ""

    text = _STRAY.sub(drop, text).strip()
    if not text and thought:
        note("reasoning_only")  # the server split off thinking and nothing else came
    return Sanitized(text=text, stripped=labels)
