"""Rule rewards: a final answer that a program checks exactly (reinforcement learning with verifiable rewards).

    final_answer("Ada was born in 1950.\\nAnswer: 40")      -> "40"
    is_correct("…\\nAnswer: Ada Marlow", "ada marlow")      -> True
    verifier_reward(prompts, completions, answer=[…])       TRL's reward-function interface: 1.0 or 0.0 each

A completion's final answer is what follows its one answer marker: `Answer:` (llmkit's tasks, and most
instruction data) or `####` (GSM8K's solutions). The check is strict on purpose, because a policy trained against
a loose checker learns the checker's holes:

- exactly one marker in the whole completion (two answers are not an answer), and nothing after its line;
- the text after it equals the expected answer: numbers by value (`1,000` = `1000` = `1000.0`, a trailing period
  or a leading `$` dropped), anything else case-insensitively with its spaces collapsed. "Ada or Bela", "39 or 40",
  "about 40" and an empty answer are wrong.

What it cannot see is whether the worked part before the marker is right: the reward is for the answer only, as in
DeepSeek-R1's and nanochat's RL. The expected answer of a row comes from its `answer` field (a GSM8K-style
solution ending in `#### 72` counts as 72) or, on the closed world, from the oracle, which computes it from the
world's facts (`llmkit.oracle.Oracle.task_answer`).
"""

from __future__ import annotations

import re

MARKER = re.compile(r"(?:^|(?<=\s))(?:answer\s*:|####)", re.I)
ANSWER_FIELDS = ("answer", "ground_truth", "final_answer")  # where a data row keeps its expected answer
_NUMBER = re.compile(r"^[-+]?\$?\d[\d,]*(?:\.\d+)?$")


def final_answer(text: str) -> str | None:
    """The answer after the completion's one marker, or None: no marker, several markers, or more lines after it."""
    marks = list(MARKER.finditer(text))
    if len(marks) != 1:
        return None
    rest = text[marks[0].end():].strip()
    if not rest or "\n" in rest:
        return None
    return rest


def normalise(answer: str) -> str:
    """Numbers as their value ('1,000.0' -> '1000'), anything else lower-cased with spaces collapsed; a trailing
    period goes either way."""
    a = " ".join(answer.strip().split()).rstrip(".").strip()
    if _NUMBER.match(a):
        value = float(a.replace("$", "").replace(",", ""))
        return str(int(value)) if value == int(value) else repr(value)
    return a.lower()


def expected_answer(value) -> str:
    """A row's expected answer as text: a GSM8K solution `… #### 72` gives '72'."""
    text = str(value)
    return text.rsplit("####", 1)[1].strip() if "####" in text else text.strip()


def is_correct(completion: str, expected) -> bool:
    given = final_answer(completion)
    return given is not None and normalise(given) == normalise(expected_answer(expected))


def completion_text(completion) -> str:
    """A completion as TRL hands it to a reward function: text, or a list of messages (the last one's content)."""
    if isinstance(completion, list):
        return completion[-1]["content"] if completion else ""
    return completion


def verifier_reward(prompts, completions, answer, **_) -> list[float]:
    """TRL's reward-function interface: 1.0 for each completion whose final answer is its row's `answer`, else 0.0."""
    return [float(is_correct(completion_text(c), a)) for c, a in zip(completions, answer)]
