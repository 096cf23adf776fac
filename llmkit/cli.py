"""The `llmkit` command: the same stage functions the notebooks call, for people who prefer a shell.

    llmkit pipeline [--run-dir runs/demo] [--preset tiny] [--stages data,pretrain,...] [--config recipe.yaml]
                    [--overwrite] [--print-config] [--sft.lora] ...
    llmkit data | pretrain | sft | reward | ppo | grpo | rloo | dpo | kto  --run-dir DIR [--preset P]
                    [--config recipe.yaml] [--print-config] [stage options]
    llmkit chat [--run-dir DIR] [--port N]
    llmkit label [--run-dir DIR] [--items PATH | --from-checkpoint DIR] [--annotator NAME] [--port N]

A stage's options are its config's fields (`llmkit.options`: the name, default and help are declared once, there,
in groups every stage shares): `llmkit sft --learning-rate 3e-4 --lora`, and in the pipeline the same option
prefixed by its stage, `llmkit pipeline --sft.learning-rate 3e-4 --sft.lora`. A recipe (`--config`, a YAML file
of per-stage options: `llmkit.recipes`) sets them too; the flags given override it. `--help` answers without
importing torch.

Any training stage runs on several processes or GPUs under accelerate, with the same arguments:

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m llmkit pretrain --run-dir DIR ...
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import time
import typing
from pathlib import Path

from llmkit import registry
from llmkit.errors import DataError, StageError
from llmkit.options import GROUPS, group_of
from llmkit.recipes import dump, read_recipe
from llmkit.registry import StageSpec

RUN_DIR_HELP = "run folder; each stage writes RUN_DIR/<stage>/ and reads the earlier stages' folders there"
CONFIG_HELP = ("a recipe: a YAML file of per-stage options ({stage: {option: value}}, and optionally preset and "
               "stages); the options given as flags override it")
PRINT_HELP = "print the resolved recipe (every option of every stage, as --config reads it) and exit"


# ---- options from the configs --------------------------------------------------------------------
def add_config_options(parser, s: StageSpec, prefix: str = "", grouped: bool = False) -> None:
    """One option per field of the stage's config: `--learning-rate`, or `--sft.learning-rate` with a prefix.
    Only the options given reach the config; the others keep the preset's (or the recipe's) value. `grouped`:
    under a heading per option group (`llmkit.options.GROUPS`), the stage's own options first."""
    cls = s.config_class
    hints = typing.get_type_hints(cls)
    order = [None, *(label for label, _ in GROUPS)]  # the stage's own options, then the groups in their order
    headings: dict = {}
    fields = dataclasses.fields(cls)
    for f in sorted(fields, key=lambda f: order.index(group_of(f.name))) if grouped else fields:
        if not f.metadata.get("cli", True):
            continue
        target = parser
        if grouped:
            label = group_of(f.name)
            if label not in headings:
                headings[label] = parser.add_argument_group(f"{label or s.name} options")
            target = headings[label]
        kind, optional = _unwrap(hints[f.name])
        flag = "--" + prefix + f.name.replace("_", "-")
        kwargs = {"dest": prefix + f.name, "default": argparse.SUPPRESS, "help": _help(f, s),
                  "metavar": f.name.upper()}
        choices = [c for c in (cls.choices_of(f.name) or ()) if c is not None]
        if kind is bool:  # --lora / --no-lora; in the pipeline --sft.lora / --sft.no-lora
            del kwargs["metavar"]
            target.add_argument(flag, action="store_const", const=True, **kwargs)
            target.add_argument("--" + prefix + "no-" + f.name.replace("_", "-"), action="store_const", const=False,
                                dest=kwargs["dest"], default=argparse.SUPPRESS, help=f"the opposite of {flag}")
            continue
        if kind in (list, "str-or-list"):
            kwargs["nargs"] = "+"
        else:
            kwargs["type"] = _none_or(kind) if optional else kind
            if choices:
                kwargs.update(choices=choices, metavar="{" + ",".join(map(str, choices)) + "}")
        target.add_argument(flag, **kwargs)


def _unwrap(hint) -> tuple:
    """(the type an option parses, whether None is allowed) for a field's type hint."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    if not args:
        return (list if typing.get_origin(hint) is list else hint), optional
    if len(args) == 1:
        return _unwrap(args[0])[0], optional
    return "str-or-list", optional  # str | list[str]: one value or several


def _none_or(kind):
    def parse(text: str):
        return None if text.lower() in ("", "none") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _help(f: dataclasses.Field, s: StageSpec) -> str:
    """The field's help as the stage words it, its default, and the presets that change it."""
    text = s.config_class.help_of(f.name)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    notes = [] if "default:" in text else [f"default: {default}"]  # a help that explains its default says it
    notes += [f"{name} {settings[f.name]}" for name, settings in s.presets.items() if f.name in settings]
    text += f" ({'; '.join(notes)})" if notes else ""
    return text.replace("%", "%%")  # argparse formats help with %


def config_overrides(args: argparse.Namespace, s: StageSpec, prefix: str = "") -> dict:
    """The config fields given on the command line."""
    given, hints = vars(args), typing.get_type_hints(s.config_class)
    out = {}
    for f in dataclasses.fields(s.config_class):
        if prefix + f.name in given:
            value = given[prefix + f.name]
            one_or_more = _unwrap(hints[f.name])[0] == "str-or-list"
            out[f.name] = value[0] if one_or_more and len(value) == 1 else value
    return out


# ---- the parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="llmkit", description="Build a ChatGPT-style assistant stage by stage.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pipeline", help="run the stages in order into one run folder",
                       usage="llmkit pipeline [--run-dir DIR] [--preset P] [--stages S,S,...] [--config RECIPE] "
                             "[--overwrite] [--print-config] [--quiet] [--STAGE.OPTION VALUE ...]",
                       description="Run the pipeline's stages in order; a finished stage is reused unless "
                                   "--overwrite. Each stage's options are given with its name in front: "
                                   "--sft.learning-rate 3e-4, or in a recipe (--config).")
    p.add_argument("--run-dir", default="runs/demo", help=RUN_DIR_HELP + " (default: runs/demo)")
    p.add_argument("--preset", choices=registry.PRESET_NAMES,
                   help="settings of every stage (default: the recipe's, else tiny)")
    p.add_argument("--stages", help=f"comma-separated stages to run, from: {', '.join(registry.STAGES)} "
                                    f"(default: the recipe's, else {','.join(registry.DEFAULT_STAGES)})")
    _add_run_options(p, "replace finished stages instead of reusing them")
    for s in registry.REGISTRY:
        add_config_options(p.add_argument_group(f"{s.name} stage (--{s.name}.OPTION)"), s, prefix=f"{s.name}.")

    for s in registry.REGISTRY:
        p = sub.add_parser(s.name, help=s.help[:1].lower() + s.help[1:], description=s.config_class.__doc__,
                           usage=f"llmkit {s.name} --run-dir DIR [--preset P] [--config RECIPE] [--overwrite] "
                                 "[--print-config] [--quiet] [--OPTION VALUE ...]")
        p.add_argument("--run-dir", required=True, help=RUN_DIR_HELP)
        p.add_argument("--preset", choices=list(s.presets), help="settings (default: the recipe's, else tiny)")
        _add_run_options(p, f"replace a finished {s.name} stage")
        add_config_options(p, s, grouped=True)

    p = sub.add_parser("chat", help="chat with the run's checkpoints side by side in the browser",
                       description="Serve the chat comparison app: up to four of the run's checkpoints answer each "
                                   "prompt side by side; votes go to the labels file as preference pairs.")
    p.add_argument("--run-dir", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--labels", help="where votes go (default: RUN_DIR/labels.jsonl, the annotation app's file)")
    _add_serve_options(p)

    p = sub.add_parser("label", help="label preference pairs in the browser (the annotation app)",
                       description="Serve the annotation app. Items come from --items (pairs or "
                                   "{prompt, responses: [a, b]} rows), else from RUN_DIR/label_items.jsonl, else "
                                   "are sampled once from --from-checkpoint (default RUN_DIR/sft) and kept there.")
    p.add_argument("--run-dir", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--items", help="pairs or items file to label")
    p.add_argument("--from-checkpoint", help="sample two answers per prompt from this checkpoint")
    p.add_argument("--prompts", help="prompts for --from-checkpoint: jsonl with a `prompt` field "
                                     "(default: the bundled RL training prompts)")
    p.add_argument("--count", type=int, default=40, help="prompts to sample items for (default 40)")
    p.add_argument("--labels", help="labels file (default: RUN_DIR/labels.jsonl)")
    p.add_argument("--annotator", default="", help="annotator name to start with")
    _add_serve_options(p)

    p = sub.add_parser("export", help="a stage's model as a standalone transformers folder and as GGUF",
                       description="Export a model for use outside llmkit: a transformers folder (merged weights, "
                                   "tokenizer, chat template, a generation config that stops at the end of a turn) "
                                   "and a GGUF file (llama.cpp), checked by loading it back and comparing logits.")
    p.add_argument("--run-dir", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--stage", default="sft", help="the stage whose model to export (default: sft)")
    p.add_argument("--model", help="a model folder to export instead of RUN_DIR/STAGE")
    p.add_argument("--out", help="output folder (default: RUN_DIR/export/STAGE)")
    p.add_argument("--formats", default="transformers,gguf", help="comma-separated: transformers, gguf (default: both)")
    p.add_argument("--gguf-type", default="f16", help="GGUF precision: f32, f16, bf16 or q8_0 (default: f16)")
    p.add_argument("--overwrite", action="store_true", help="replace what the output folder holds")
    return ap


def _add_run_options(p: argparse.ArgumentParser, overwrite: str) -> None:
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--overwrite", action="store_true", help=overwrite)
    p.add_argument("--print-config", action="store_true", help=PRINT_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--auth", help="USER:PASSWORD required to open the app (use it whenever --host exposes it)")
    p.add_argument("--share", action="store_true", help="open a public Gradio share link (off by default)")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with an unknown option named beside the closest ones and every option that exists."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = parser._subparsers._group_actions[0].choices[args.command]  # argparse has no public way
        known = sorted(o for a in command._actions for o in a.option_strings if o.startswith("--"))
        flags = [u.split("=")[0] for u in unknown if u.startswith("-")] or unknown
        close = difflib.get_close_matches(flags[0], known, n=3)
        command.error(f"unknown option {' '.join(flags)}" + (f"; did you mean {' or '.join(close)}?" if close else "")
                      + f"\n`llmkit {args.command}` takes: {' '.join(known)}")
    return args


# ---- the apps ------------------------------------------------------------------------------------
def _auth(args: argparse.Namespace):
    if not args.auth:
        return None
    if ":" not in args.auth:
        raise StageError(f"--auth {args.auth!r}: give USER:PASSWORD")
    return tuple(args.auth.split(":", 1))


def label_items(args: argparse.Namespace):
    """The items `llmkit label` shows; sampled items are written once, so every reopen shows the same ones."""
    from llmkit.formats import read_prompts  # the apps' modules import torch: not on --help's path
    from llmkit.labels import load_items, sample_items, write_items
    from llmkit.loaders import bundled_path

    if args.items:
        return load_items(args.items)
    kept = Path(args.run_dir) / "label_items.jsonl"
    if kept.exists():
        return load_items(kept)
    checkpoint = Path(args.from_checkpoint) if args.from_checkpoint else Path(args.run_dir) / "sft"
    if not (checkpoint / "config.json").exists():
        raise DataError(f"nothing to label: pass --items FILE (preference pairs or {{prompt, responses}} rows) or "
                        f"--from-checkpoint DIR; {checkpoint} is not a model folder (run SFT first for the default)")
    prompts = read_prompts(args.prompts or bundled_path("rl_prompts_train.jsonl"))[: args.count]
    items = sample_items(checkpoint, prompts)
    kept.parent.mkdir(parents=True, exist_ok=True)
    write_items(kept, items)
    print(f"sampled {len(items)} items from {checkpoint} into {kept}")
    return items


def serve_chat(args: argparse.Namespace) -> int:
    # the apps import torch and gradio: not on --help's path
    from widgets.chat import ChatCompare, launch

    auth = _auth(args)
    app = ChatCompare(args.run_dir, args.labels)
    print(f"checkpoints: {', '.join(app.available)}; votes go to {app.labels.path}", flush=True)
    launch(app.build(), host=args.host, port=args.port, share=args.share, auth=auth, block=True)
    return 0


def serve_labels(args: argparse.Namespace) -> int:
    # the apps import torch and gradio: not on --help's path
    from widgets.annotate import AnnotationApp, launch

    auth = _auth(args)
    items = label_items(args)
    labels = Path(args.labels) if args.labels else Path(args.run_dir) / "labels.jsonl"
    app = AnnotationApp(items, labels, args.annotator)
    print(f"{len(items)} items; labels go to {labels}", flush=True)
    launch(app.build(), host=args.host, port=args.port, share=args.share, auth=auth, block=True)
    return 0


# ---- main ----------------------------------------------------------------------------------------
def export_model(args: argparse.Namespace) -> int:
    from llmkit.export import export  # torch and gguf: not on --help's path

    run_dir = Path(args.run_dir)
    model = Path(args.model) if args.model else run_dir / args.stage
    out = Path(args.out) if args.out else run_dir / "export" / (model.name if args.model else args.stage)
    record = export(model, out, tuple(f.strip() for f in args.formats.split(",") if f.strip()), args.gguf_type,
                    args.overwrite)
    check = (f"; GGUF logits within {record['gguf_max_logit_difference']:.2g} of the model's"
             if "gguf_max_logit_difference" in record else "")
    print(f"[export] {model} -> {out}: {', '.join(record['files'])}{check}")
    return 0


def _quiet_libraries() -> None:
    """--quiet: no progress bars from the libraries either (transformers' weight loading and saving, the
    datasets maps inside TRL's trainers)."""
    from datasets.utils import logging as datasets_logging  # heavy: not on --help's path
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    datasets_logging.disable_progress_bar()


def resolve(args: argparse.Namespace) -> tuple[str, dict]:
    """(the preset, {stage: config}) that the command line asks for: presets, then the recipe, then the flags."""
    recipe = read_recipe(args.config) if args.config else {}
    if args.command == "pipeline":
        names = ([n.strip() for n in args.stages.split(",") if n.strip()] if args.stages
                 else list(recipe.get("stages") or registry.DEFAULT_STAGES))
        for name in names:
            registry.stage(name)
        flags = {s.name: config_overrides(args, s, f"{s.name}.") for s in registry.REGISTRY}
    else:
        names, flags = [args.command], {args.command: config_overrides(args, registry.stage(args.command))}
    return registry.resolve(names, args.preset, recipe, flags, where=args.config or "the recipe")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        if args.command == "chat":
            return serve_chat(args)
        if args.command == "label":
            return serve_labels(args)
        if args.command == "export":
            return export_model(args)
        preset, configs = resolve(args)
        if args.print_config:
            print(dump(registry.as_recipe(preset, configs, with_stages=args.command == "pipeline")), end="")
            return 0
        if args.quiet:
            _quiet_libraries()
        from llmkit import pipeline, runs  # the stages and torch: only once a stage runs

        if args.command == "pipeline":
            pipeline.run_configs(args.run_dir, configs, args.overwrite, progress=not args.quiet)
            return 0
        start = time.perf_counter()
        result = pipeline.run_stage(args.command, configs[args.command], args.run_dir, args.overwrite,
                                    progress=not args.quiet and runs.is_main_process())
        if runs.is_main_process():  # under `accelerate launch` the main process reports
            took = time.perf_counter() - start
            status = "reused (finished earlier; --overwrite to redo)" if result.reused else f"done in {took:.1f} s"
            print(f"[{args.command}] {status} -> {result.output_dir}")
            if not result.reused:
                print(pipeline.stage_summary(result))
        return 0
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
