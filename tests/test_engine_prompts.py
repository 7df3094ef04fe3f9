"""The prompt fields' syntax: batches of prompt lines, prompts that change over time, and their errors."""

from __future__ import annotations

import pytest

from mmaudio.engine.prompts import parse_prompts, parse_time
from mmaudio.errors import InvalidInputError


def test_prompt_lines_are_a_batch_with_shared_or_paired_negatives() -> None:
    plan = parse_prompts("dog barking\n\n  rain \n", "music")
    assert plan.labels() == ("dog barking", "rain") and not plan.is_timed
    assert [n.text_at(0) for n in plan.negatives] == ["music", "music"]
    paired = parse_prompts("a\nb", "x\ny")
    assert [n.text_at(0) for n in paired.negatives] == ["x", "y"]
    assert parse_prompts("", "").labels() == ("",) and parse_prompts("a", "").negatives == (None,)
    with pytest.raises(InvalidInputError, match="negative_prompt: 2 lines for 3 prompts"):
        parse_prompts("a\nb\nc", "x\ny")


def test_a_timed_prompt_is_one_track_that_changes_at_its_times() -> None:
    plan = parse_prompts("rain on a tin roof\n[12] thunder, heavy rain\n[1:05.5] birds after the storm", "")
    (track,) = plan.prompts
    assert [(s.start, s.text, s.line) for s in track.segments] == [
        (0.0, "rain on a tin roof", 1), (12.0, "thunder, heavy rain", 2), (65.5, "birds after the storm", 3)]
    assert [track.text_at(t) for t in (0, 11.99, 12, 65.4, 65.5, 999)] == [
        "rain on a tin roof", "rain on a tin roof", "thunder, heavy rain", "thunder, heavy rain",
        "birds after the storm", "birds after the storm"]
    assert plan.is_timed and plan.num_rows == 1


def test_a_timed_prompt_may_start_later_and_takes_timed_or_single_negatives() -> None:
    (track,) = parse_prompts("[5] wind", "").prompts
    assert track.text_at(1) == "" and track.text_at(5) == "wind"  # before the first time: no prompt
    plan = parse_prompts("[0] a\n[10] b", "[0:20] music")
    assert plan.negatives[0].text_at(10) == "" and plan.negatives[0].text_at(20) == "music"
    assert parse_prompts("[0] a\n[10] b", "speech").negatives[0].text_at(15) == "speech"
    batch = parse_prompts("a\nb", "[3] music")  # a timed negative under a batch applies to every row
    assert all(n.text_at(4) == "music" for n in batch.negatives)


@pytest.mark.parametrize("text, seconds", [("12", 12.0), (" 12.5 ", 12.5), ("12s", 12.0), ("0:12", 12.0),
                                           ("1:05.5", 65.5), ("1:02:03", 3723.0), ("90", 90.0)])
def test_times(text: str, seconds: float) -> None:
    assert parse_time(text, "here") == seconds


@pytest.mark.parametrize("prompt, negative, message", [
    ("rain\n[12] thunder\nbirds", "", r"prompt, line 3: expected a time in brackets at the start, like \[12\]"),
    ("rain\n[1:7x] thunder", "", r"prompt, line 2: \[1:7x\] is not a time; expected seconds or minutes:seconds"),
    ("rain\n\n[20] a\n[12] b", "", r"prompt, line 4: \[12\] is not after line 3's 20s; expected times that "
                                   r"increase"),
    ("rain\n[1:75] b", "", r"prompt, line 2: \[1:75\] has more than 59 in a minutes or seconds field"),
    ("[0] a\n[0] b", "", r"prompt, line 2: \[0\] is not after line 1's 0s"),
    ("[0] a\n[10] b", "x\ny", r"negative_prompt: 2 lines without times for a timed prompt"),
    ("a", "x\n[5] y\nz", r"negative_prompt, line 3: expected a time in brackets"),
])
def test_timed_prompt_errors_name_the_line_and_what_was_expected(prompt: str, negative: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_prompts(prompt, negative)


def test_a_time_after_the_end_of_the_soundtrack_is_refused() -> None:
    plan = parse_prompts("rain\n[30] thunder", "")
    plan.check_fits(31.0)
    with pytest.raises(InvalidInputError, match=r"prompt, line 2: \[30s\] starts at or after the end of the 20 s"):
        plan.check_fits(20.0)
