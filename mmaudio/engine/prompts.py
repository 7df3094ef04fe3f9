"""The prompt fields' syntax: a batch of prompts, one per line, or one prompt that changes over time.

Batch (no line starts with a time):
    rain on a tin roof
    a dog barking
gives two generations of the same clip. The negative prompt has no line (the model's unconditional prompt),
one line for every prompt, or exactly one line per prompt.

Timed (lines start with a time in brackets, seconds or minutes:seconds):
    rain on a tin roof
    [12] thunder, heavy rain
    [1:05.5] birds after the storm
gives one soundtrack whose prompt changes at 12 s and at 65.5 s (an untimed first line starts at 0). Each window
of a long soundtrack uses the prompt in force at its middle. The negative prompt is then one line for the whole
soundtrack, or timed the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidInputError

_TAGGED = re.compile(r"^\s*\[\s*\d")  # a line that means to start with a time
_TAG = re.compile(r"^\s*\[([^\]]*)\]\s*(.*)$")
_SECONDS = re.compile(r"^(\d+(?:\.\d*)?)\s*s?$")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")
TIME_EXAMPLES = "[12], [12.5], [0:12] or [1:02:03.5]"


@dataclass(frozen=True)
class PromptSegment:
    """One line of a prompt field: its text from ``start`` seconds on (``line``: 1-based, for messages)."""

    start: float
    text: str
    line: int


@dataclass(frozen=True)
class PromptTrack:
    """What one generation asks for over time: segments in time order, the first from 0 s."""

    segments: tuple[PromptSegment, ...]

    @classmethod
    def constant(cls, text: str, line: int = 1) -> PromptTrack:
        return cls((PromptSegment(0.0, text, line),))

    @property
    def is_timed(self) -> bool:
        return len(self.segments) > 1

    def text_at(self, seconds: float) -> str:
        """The text in force at ``seconds``."""
        current = self.segments[0].text
        for segment in self.segments:
            if segment.start <= seconds:
                current = segment.text
        return current

    def label(self) -> str:
        if not self.is_timed:
            return self.segments[0].text
        return " | ".join(f"{_clock(s.start)} {s.text}".strip() for s in self.segments)


@dataclass(frozen=True)
class PromptPlan:
    """The prompt of every generation row and its negative (None: the model's unconditional prompt)."""

    prompts: tuple[PromptTrack, ...]
    negatives: tuple[PromptTrack | None, ...]

    @property
    def num_rows(self) -> int:
        return len(self.prompts)

    @property
    def is_timed(self) -> bool:
        return any(t.is_timed for t in (*self.prompts, *(n for n in self.negatives if n is not None)))

    def labels(self) -> tuple[str, ...]:
        return tuple(track.label() for track in self.prompts)

    def check_fits(self, duration: float) -> None:
        """Every timed line must start inside the soundtrack: a later one can only be a mistake."""
        for field, tracks in (("prompt", self.prompts), ("negative_prompt", self.negatives)):
            for track in tracks:
                for segment in track.segments[1:] if track is not None else ():
                    if segment.start >= duration:
                        raise InvalidInputError(
                            f"{field}, line {segment.line}: [{_clock(segment.start)}] starts at or after the end "
                            f"of the {duration:g} s soundtrack; expected a time before {duration:g} s"
                        )


def parse_prompts(prompt: str, negative_prompt: str = "") -> PromptPlan:
    """The :class:`PromptPlan` of the two prompt fields (see the module docstring for the syntax)."""
    for name, value in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if not isinstance(value, str):
            raise InvalidInputError(f"{name}: expected text, got {type(value).__name__}")
    if _is_timed(prompt):
        track = _timeline(prompt, "prompt")
        return PromptPlan((track,), (_timed_negative(negative_prompt),))
    prompts = [PromptTrack.constant(text, line) for line, text in _lines(prompt)] or [PromptTrack.constant("")]
    if _is_timed(negative_prompt):
        negative = _timeline(negative_prompt, "negative_prompt")
        return PromptPlan(tuple(prompts), (negative,) * len(prompts))
    negatives = [PromptTrack.constant(text, line) for line, text in _lines(negative_prompt)]
    if not negatives:
        return PromptPlan(tuple(prompts), (None,) * len(prompts))
    if len(negatives) == 1:
        return PromptPlan(tuple(prompts), (negatives[0],) * len(prompts))
    if len(negatives) != len(prompts):
        raise InvalidInputError(
            f"negative_prompt: {len(negatives)} lines for {len(prompts)} prompts; give one line for all prompts "
            "or exactly one line per prompt"
        )
    return PromptPlan(tuple(prompts), tuple(negatives))


def distinct_texts(tracks: Sequence[PromptTrack | None]) -> list[str]:
    """Every text the tracks use, once each, in first-use order (what the text encoder must run on)."""
    seen: dict[str, None] = {}
    for track in tracks:
        for segment in track.segments if track is not None else ():
            seen.setdefault(segment.text, None)
    return list(seen)


# ---- parsing --------------------------------------------------------------------------------------------------
def _lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-empty lines."""
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _is_timed(text: str) -> bool:
    return any(_TAGGED.match(line) for _, line in _lines(text))


def _timed_negative(text: str) -> PromptTrack | None:
    if _is_timed(text):
        return _timeline(text, "negative_prompt")
    lines = _lines(text)
    if not lines:
        return None
    if len(lines) > 1:
        raise InvalidInputError(
            f"negative_prompt: {len(lines)} lines without times for a timed prompt; give one line for the whole "
            f"soundtrack, or start each line with a time like {TIME_EXAMPLES}"
        )
    return PromptTrack.constant(lines[0][1], lines[0][0])


def _timeline(text: str, field: str) -> PromptTrack:
    segments: list[PromptSegment] = []
    for index, (number, line) in enumerate(_lines(text)):
        tag = _TAG.match(line) if line.startswith("[") else None
        if tag is None:
            if index == 0:  # an untimed first line is the prompt from the start
                segments.append(PromptSegment(0.0, line, number))
                continue
            raise InvalidInputError(
                f"{field}, line {number}: expected a time in brackets at the start, like {TIME_EXAMPLES}, because "
                f"this prompt changes over time (other lines start with a time); got {_quoted(line)}"
            )
        start = parse_time(tag.group(1), f"{field}, line {number}")
        if segments and start <= segments[-1].start:
            raise InvalidInputError(
                f"{field}, line {number}: [{tag.group(1).strip()}] is not after line {segments[-1].line}'s "
                f"{_clock(segments[-1].start)}; expected times that increase from line to line"
            )
        if not segments and start > 0:  # nothing asked before the first time: the unconditional prompt
            segments.append(PromptSegment(0.0, "", number))
        if segments and segments[-1].start == 0.0 and start == 0.0:
            raise InvalidInputError(f"{field}, line {number}: a second prompt for 0 s; expected one prompt per time")
        segments.append(PromptSegment(start, tag.group(2).strip(), number))
    return PromptTrack(tuple(segments))


def parse_time(text: str, where: str) -> float:
    """Seconds from "12", "12.5", "12s", "0:12", "1:02:03.5"; an error naming ``where`` otherwise."""
    value = text.strip()
    seconds = _SECONDS.match(value)
    if seconds:
        return float(seconds.group(1))
    clock = _CLOCK.match(value)
    if clock:
        hours, minutes, secs = clock.group(1), clock.group(2), clock.group(3)
        if float(secs) >= 60 or (hours is not None and int(minutes) >= 60):
            raise InvalidInputError(f"{where}: [{value}] has more than 59 in a minutes or seconds field; "
                                    f"expected a time like {TIME_EXAMPLES}")
        return (int(hours or 0) * 60 + int(minutes)) * 60 + float(secs)
    raise InvalidInputError(f"{where}: [{value}] is not a time; expected seconds or minutes:seconds, like "
                            f"{TIME_EXAMPLES}")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60.0)
    text = f"{secs:g}" if minutes == 0 else f"{int(minutes)}:{secs:05.2f}".rstrip("0").rstrip(".")
    return text if minutes else f"{text}s"


def _quoted(line: str, limit: int = 60) -> str:
    return repr(line if len(line) <= limit else line[:limit] + "...")
