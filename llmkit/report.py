"""A run's report, RUN_DIR/report.md: each finished stage's measurements, the bar each must meet, its verdict,
the warnings a stage left in its metrics.json (`"warnings": [...]`: a corpus far too small for the model, answers
that ran out of tokens) and its curves — and the same measurements as the one line a stage prints when it
finishes.

What each stage reports is declared once, as `Row`s of its measurements (`llmkit.measures`); this module only
reads the stage folders' metrics.json against them, so a report can be rewritten at any time. Every bar was set
on the closed world: a verdict is given only where a folder's inputs were the closed world (its
stage_config.json says so); on other data a row shows its value alone.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from llmkit import runs


@dataclass(frozen=True)
class Row:
    """One measurement of a stage: its key in metrics.json, and optionally a bar and a value shown beside it.

    `at_least` / `at_most`: a fixed bar; `above`: a bar the value must pass (a confidence interval's lower end
    above zero). `beside`: the key of another value to show in parentheses (the SFT
    model's, for an RL stage). `max_drop`: the value may fall at most this far below `beside`'s — RL must not
    lose what SFT knew; answering more questions right than SFT is no failure. `min_gain`: the value must be at
    least this far above `beside`'s — RL must make the answers better. `hide_zero`: a count shown only
    when there is something to count."""

    label: str
    key: str
    at_least: float | None = None
    at_most: float | None = None
    above: float | None = None
    beside: str | None = None
    max_drop: float | None = None
    min_gain: float | None = None
    hide_zero: bool = False

    def verdict(self, metrics: dict, closed_world: bool = True) -> str:
        """"met", "**not met**", or "" where the row has no bar, or its bar (set on the closed world) does not apply:
        the stage's inputs were not the closed world."""
        if not closed_world:
            return ""
        value = metrics[self.key]
        checks = []
        if self.at_least is not None:
            checks.append(value >= self.at_least)
        if self.at_most is not None:
            checks.append(value <= self.at_most)
        if self.above is not None:
            checks.append(value > self.above)
        if self.max_drop is not None:  # 16 of 320 questions is 0.05 exactly, which float subtraction can make
            checks.append(metrics[self.beside] - value <= self.max_drop + 1e-9)  # 0.0500000000000000x
        if self.min_gain is not None:
            checks.append(value - metrics[self.beside] >= self.min_gain - 1e-9)
        if not checks:
            return ""
        return "met" if all(checks) else "**not met**"

    def bar(self) -> str:
        parts = [f">= {self.at_least:g}"] if self.at_least is not None else []
        parts += [f"<= {self.at_most:g}"] if self.at_most is not None else []
        parts += [f"> {self.above:g}"] if self.above is not None else []
        parts += [f"at most {self.max_drop:g} below SFT"] if self.max_drop is not None else []
        parts += [f"at least {self.min_gain:g} above SFT"] if self.min_gain is not None else []
        return ", ".join(parts)

    def value(self, metrics: dict) -> str | None:
        """The value as shown (with the `beside` value in parentheses), or None where the stage did not measure it."""
        value = metrics.get(self.key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or (self.hide_zero and not value):
            return None
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        if self.beside in metrics:
            shown += f" ({metrics[self.beside]:.3f})"
        return shown


def summary(rows: tuple[Row, ...], metrics: dict, closed_world: bool = True) -> str:
    """The stage's measurements on one line: "label value (beside) [bar: verdict]" for each it has (the bars only
    on the closed world)."""
    parts = []
    for row in rows:
        shown = row.value(metrics)
        if shown is not None:
            verdict = row.verdict(metrics, closed_world)
            parts.append(f"{row.label} {shown}" + (f" [{row.bar()}: {verdict.strip('*')}]" if verdict else ""))
    return " · ".join(parts)


def write_report(run_dir: str | Path, sections: list[tuple[str, tuple[Row, ...], bool]],
                 timings: dict[str, float | None] | None = None, peak_flops: float | None = None,
                 answers: list[dict] = ()) -> Path:
    """Write RUN_DIR/report.md: a table row per measurement of each finished folder in `sections` (folder name,
    its rows, whether its inputs were the closed world: the bars apply), its curves, and the wall time of the
    stages run this time. `timings`: folder -> seconds this run
    (None: reused). `peak_flops`: the machine's measured matmul peak, beside the wall time. `answers`: rows
    {"prompt", "answers": {folder: text}}, shown side by side."""
    run_dir = Path(run_dir)
    timings = timings or {}
    lines = [f"# llmkit run report: {run_dir}", "",
             "| stage | measurement | value | bar | verdict | wall time this run |", "|---|---|---:|---|---|---:|"]
    plots, warnings = [], []
    for folder_name, rows, closed_world in sections:
        folder = runs.stage_dir(run_dir, folder_name)
        if not runs.finished(folder):
            continue
        metrics = runs.read_metrics(folder)
        warnings += [f"- {folder_name}: {w}" for w in metrics.get("warnings", [])]
        t = timings.get(folder_name, "n/a")
        took = "reused" if t is None else (f"{t:.0f} s" if isinstance(t, float) else t)
        first = True
        for row in rows:
            shown = row.value(metrics)
            if shown is None:
                continue
            lines.append(f"| {folder_name if first else ''} | {row.label} | {shown} | "
                         f"{row.bar() if closed_world else ''} | {row.verdict(metrics, closed_world)} | "
                         f"{took if first else ''} |")
            first = False
        if (folder / "curves.png").exists():
            plots.append(f"### {folder_name}\n\n![{folder_name} curves]({folder_name}/curves.png)\n")
    own = [name for name, _, closed_world in sections if not closed_world and runs.finished(run_dir / name)]
    if own:
        lines += ["", f"{', '.join(own)}: inputs other than the bundled closed world, so no verdicts: every bar was "
                      "set on the closed world, where the answers are known. Their values are what can be measured "
                      "on any data."]
    lines += _timing_note(timings, peak_flops)
    lines += ["", "## Warnings", "", *warnings] if warnings else []
    lines += _side_by_side(answers)
    lines += ["", "## Curves", "", *plots]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _side_by_side(answers: list[dict]) -> list[str]:
    """Each prompt and every model's answer, as a table: text only (Markdown and HTML escaped, lines joined)."""
    if not answers:
        return []
    folders = list(answers[0]["answers"])

    def cell(text: str) -> str:  # model text read as text: no link, image or HTML of its own makes it into a viewer
        text = re.sub(r"([\\`*_\[\]()!|#~])", r"\\\1", html.escape(" ".join(text.split())))
        return text or "(nothing)"

    lines = ["", "## The same prompts, every model", "", "| prompt | " + " | ".join(folders) + " |",
             "|---|" + "---|" * len(folders)]
    return lines + [f"| {cell(r['prompt'])} | " + " | ".join(cell(r["answers"].get(f, "")) for f in folders) + " |"
                    for r in answers]


def _timing_note(timings: dict, peak: float | None) -> list[str]:
    """The total wall time of the stages that ran, and the machine's speed: times only compare between machines
    of about the same matmul peak."""
    ran = [t for t in timings.values() if isinstance(t, (int, float))]
    if not ran and not peak:
        return []
    parts = [f"Wall time of the stages run this time: {sum(ran):.0f} s."] if ran else []
    if isinstance(peak, (int, float)):
        parts.append(f"Pretraining measured this machine's matmul peak at {peak / 1e9:.0f} GFLOP/s "
                     "(`peak_flops` in pretrain/metrics.json); wall times scale with it.")
    return ["", " ".join(parts)]
