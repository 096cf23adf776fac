"""The one table of option names in docs/stages.md, made from the configs themselves (`llmkit.options`): each shared
option once, with its group, its help, its default and the stages that have it; then each stage's own options.

    python docs/options_table.py            # print the table
    python docs/options_table.py --write    # put it into docs/stages.md, between its markers

tests/test_options.py checks that docs/stages.md holds the table this prints, so the docs cannot drift from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from llmkit.options import GROUPS, group_of
from llmkit.registry import REGISTRY

STAGES_MD = Path(__file__).resolve().parent / "stages.md"
BEGIN, END = "<!-- OPTIONS TABLE: python docs/options_table.py --write -->", "<!-- /OPTIONS TABLE -->"


# what the shared help says where each stage says its own words (`StageConfig.WORDS`)
GENERIC = {"data": "the stage's data (its --help says which rows)", "data_default": "the bundled closed world's",
           "eval_default": "the bundled held-out set, or a share of train_data", "base": "the run's earlier stage",
           "folder": "the stage's name"}


class _Generic(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _default(cls: type, name: str):
    f = cls.__dataclass_fields__[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table() -> str:
    shared: dict[str, list] = {}
    own: dict[str, list] = {}
    for s in REGISTRY:
        cls = s.config_class
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli", True):
                continue
            (shared if group_of(f.name) else own).setdefault(f.name, []).append((s.name, cls))
    lines = ["| option | group | what it is | default | stages |", "|---|---|---|---|---|"]
    order = [name for _, group in GROUPS for name in group.__dataclass_fields__]
    for name in sorted(shared, key=order.index):
        users = shared[name]
        defaults = {}
        for stage, cls in users:
            defaults.setdefault(repr(_default(cls, name)), []).append(stage)
        shown = "; ".join(v if len(defaults) == 1 else f"{v} ({', '.join(st)})" for v, st in defaults.items())
        group = next(g for _, g in GROUPS if name in g.__dataclass_fields__)
        help_text = group.__dataclass_fields__[name].metadata["help"].format_map(_Generic(GENERIC))
        lines.append(f"| `{name}` | {group_of(name)} | {_cell(help_text)} | {_cell(shown)} | "
                     f"{', '.join(stage for stage, _ in users)} |")
    lines += ["", "Each stage's own options:", "", "| stage | options |", "|---|---|"]
    for s in REGISTRY:
        names = [name for name, users in own.items() if any(stage == s.name for stage, _ in users)]
        lines.append(f"| {s.name} | {', '.join(f'`{n}`' for n in names)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="write the table into docs/stages.md")
    args = ap.parse_args()
    if not args.write:
        print(table())
        return
    text = STAGES_MD.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    STAGES_MD.write_text(f"{head}{BEGIN}\n{table()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
