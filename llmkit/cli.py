"""The `llmkit` command: the same stage functions the notebooks call, for people who prefer a shell.

    llmkit pipeline [--run-dir runs/demo] [--preset tiny] [--stages data,pretrain] [--corpus PATH] [--overwrite]
    llmkit data --run-dir DIR [--corpus PATH] [--text-field NAME] [--vocab-size N] [--block-size N] ...
    llmkit pretrain --run-dir DIR [--data PATH] [--base-model PATH] [--depth N] [--max-steps N] ...
    llmkit sft --run-dir DIR [--sft-data PATH] [--format auto] [--lora] [--sft-base-model PATH] ...
    llmkit reward --run-dir DIR [--rm-data PATH] [--rm-format auto] [--labels PATH] ...
    llmkit ppo --run-dir DIR [--ppo-steps N] [--kl-coef B] [--ppo-lora]
    llmkit grpo|rloo|dpo --run-dir DIR [--rl-steps N] [--beta B]
    llmkit chat [--run-dir DIR] [--port N]
    llmkit label [--run-dir DIR] [--items PATH | --from-checkpoint DIR] [--annotator NAME] [--port N]

Any training stage runs on several processes or GPUs under accelerate, with the same arguments:

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m llmkit pretrain --run-dir DIR ...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from llmkit import data, launch, pretrain, reward, runs, sft
from llmkit.formats import FORMATS, PREFERENCE_FORMATS
from llmkit.loaders import DataError
from llmkit.rl import ppo, trl_methods
from llmkit.runs import StageExistsError

PRESET_CHOICES = list(data.PRESETS)
# Stages in pipeline order; GRPO, RLOO and DPO run beside PPO on request (llmkit grpo / rloo / dpo).
STAGES = ["data", "pretrain", "sft", "reward", "ppo"]
EXTRA_STAGES = list(trl_methods.METHODS)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data stage")
    g.add_argument("--corpus", help="raw corpus: jsonl/json/parquet/txt file or folder, gzip or not, or a "
                                    "save_to_disk folder (default: the bundled closed-world crawl)")
    g.add_argument("--text-field", help="field holding the text (default: detect text/content/document/body)")
    g.add_argument("--max-documents", type=int, help="read only the first N documents")
    g.add_argument("--vocab-size", type=int, help="BPE vocabulary size (an upper bound)")
    g.add_argument("--block-size", type=int, help="tokens per packed training block")
    g.add_argument("--minhash-threshold", type=float, help="Jaccard similarity at which documents are duplicates")
    g.add_argument("--language-model", help="path to a fastText lid.176.bin for language identification "
                                            "(default: skipped)")
    g.add_argument("--num-proc", type=int, help="processes for tokenizing and packing")


def _data_config(args: argparse.Namespace) -> data.DataConfig:
    overrides = {k: v for k, v in {
        "corpus": args.corpus, "text_field": args.text_field, "max_documents": args.max_documents,
        "vocab_size": args.vocab_size, "block_size": args.block_size, "minhash_threshold": args.minhash_threshold,
        "language_model": args.language_model or None, "num_proc": args.num_proc,
    }.items() if v is not None}
    return data.config_for(args.preset, **overrides)


def _add_pretrain_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pretrain stage")
    g.add_argument("--base-model", help="local transformers causal-LM folder to continue pretraining from")
    g.add_argument("--data", dest="pretrain_data", help="blocks folder or text files/folders to train on "
                                                        "(default: RUN_DIR/data/blocks)")
    g.add_argument("--depth", type=int, help="model depth; width, heads and learning rate follow")
    g.add_argument("--max-steps", type=int, help="optimizer steps")
    g.add_argument("--batch-size", type=int, help="sequences per optimizer step, over all devices")
    g.add_argument("--micro-batch-size", type=int, help="sequences per forward pass on one device")
    g.add_argument("--seq-len", type=int, help="tokens per training row")
    g.add_argument("--learning-rate", type=float, help="peak learning rate")
    g.add_argument("--optimizer", choices=pretrain.OPTIMIZERS,
                   help="for the transformer's matrices (default: the preset's, AdamW); Muon needs fewer steps")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")


def _pretrain_config(args: argparse.Namespace) -> pretrain.PretrainConfig:
    overrides = {k: v for k, v in {
        "base_model": args.base_model, "data": args.pretrain_data, "depth": args.depth, "max_steps": args.max_steps,
        "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size, "seq_len": args.seq_len,
        "learning_rate": args.learning_rate, "optimizer": args.optimizer, "compile": args.compile or None, "text_field": args.text_field,
    }.items() if v is not None}
    return pretrain.config_for(args.preset, **overrides)


def _add_sft_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sft stage")
    g.add_argument("--sft-base-model", help="local causal-LM folder with a chat template (default: RUN_DIR/pretrain)")
    g.add_argument("--sft-data", help="conversations to train on: a file or folder in any supported format "
                                      "(default: the bundled closed-world conversations)")
    g.add_argument("--sft-eval-data", help="conversations to evaluate on (default: bundled eval split or 5%% of --sft-data)")
    g.add_argument("--format", dest="data_format", choices=["auto", *FORMATS],
                   help="format of --sft-data (default: detected from the first row)")
    g.add_argument("--max-examples", type=int, help="train on the first N conversations only")
    g.add_argument("--epochs", type=float, help="passes over the training conversations")
    g.add_argument("--sft-learning-rate", type=float, help="peak learning rate (default 1e-3 full, 3e-3 LoRA)")
    g.add_argument("--lora", action="store_true", help="train a LoRA adapter (then merged) instead of every weight")
    g.add_argument("--lora-r", type=int, help="LoRA rank (default 8)")
    g.add_argument("--lora-alpha", type=int, help="LoRA alpha (default 16)")


def _sft_config(args: argparse.Namespace) -> sft.SFTConfig:
    overrides = {k: v for k, v in {
        "base_model": args.sft_base_model, "train_data": args.sft_data, "eval_data": args.sft_eval_data,
        "data_format": args.data_format, "max_examples": args.max_examples, "epochs": args.epochs,
        "learning_rate": args.sft_learning_rate, "lora": args.lora or None, "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
    }.items() if v is not None}
    return sft.config_for(args.preset, **overrides)


def _add_reward_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reward stage")
    g.add_argument("--rm-base-model", help="local causal-LM folder to put the reward head on (default: RUN_DIR/sft)")
    g.add_argument("--rm-data", help="preference pairs to train on (default: the bundled closed-world pairs)")
    g.add_argument("--rm-eval-data", help="preference pairs to evaluate on (default: bundled eval split or 10%% of --rm-data)")
    g.add_argument("--rm-format", choices=["auto", *PREFERENCE_FORMATS],
                   help="format of --rm-data: explicit (prompt/chosen/rejected), implicit or hh transcripts")
    g.add_argument("--labels", help="annotation-app labels to train on as well (default: RUN_DIR/labels.jsonl if present)")
    g.add_argument("--rm-epochs", type=float, help="passes over the pairs")
    g.add_argument("--rm-learning-rate", type=float, help="peak learning rate")
    g.add_argument("--rm-lora", action="store_true", help="train a LoRA adapter (then merged) instead of every weight")
    g.add_argument("--rm-head", choices=reward.HEADS, help="likelihood (default: last-token head + the SFT model's "
                   "weighted token log-probabilities) or last_token (the classic head alone)")


def _reward_config(args: argparse.Namespace) -> reward.RewardConfig:
    overrides = {k: v for k, v in {
        "base_model": args.rm_base_model, "train_data": args.rm_data, "eval_data": args.rm_eval_data,
        "data_format": args.rm_format, "labels": args.labels, "epochs": args.rm_epochs,
        "learning_rate": args.rm_learning_rate, "lora": args.rm_lora or None, "head": args.rm_head,
    }.items() if v is not None}
    return reward.config_for(args.preset, **overrides)


def _add_ppo_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ppo stage")
    g.add_argument("--ppo-steps", type=int, help="PPO steps (one rollout batch each)")
    g.add_argument("--kl-coef", type=float, help=f"KL penalty coefficient beta (default {ppo.PPOConfig.kl_coef})")
    g.add_argument("--target-kl", type=float, help="adapt beta toward this KL per sequence")
    g.add_argument("--kl-estimator", choices=["k1", "k3"], help="per-token KL estimator (default k1)")
    g.add_argument("--rl-prompts", help="prompts to optimise on: jsonl with a `prompt` (default: bundled RL prompts)")
    g.add_argument("--ppo-lora", action="store_true", help="train a LoRA adapter on the policy (reference = adapter off)")


def _ppo_config(args: argparse.Namespace) -> ppo.PPOConfig:
    overrides = {k: v for k, v in {
        "steps": args.ppo_steps, "kl_coef": args.kl_coef, "target_kl": args.target_kl,
        "kl_estimator": args.kl_estimator, "prompts": args.rl_prompts, "lora": args.ppo_lora or None,
    }.items() if v is not None}
    return ppo.config_for(args.preset, **overrides)


def _method_config(method: str, args: argparse.Namespace) -> trl_methods.MethodConfig:
    overrides = {k: v for k, v in {
        # the pipeline command has no method options: its GRPO/RLOO/DPO stages run with the defaults
        "steps": getattr(args, "rl_steps", None), "beta": getattr(args, "beta", None), "prompts": args.rl_prompts,
        "preferences": getattr(args, "preferences", None),
    }.items() if v is not None}
    return trl_methods.config_for(method, args.preset, **overrides)


def _stage_parser(sub, name: str, module, help_text: str, writes: str, overwrite_help: str):
    """The subcommand of one stage, with the options every stage command has."""
    p = sub.add_parser(name, help=help_text, description=module.__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, help=f"run folder; the stage writes {writes}")
    p.add_argument("--preset", default="tiny", choices=PRESET_CHOICES)
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="llmkit", description="Build a ChatGPT-style assistant stage by stage.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pipeline", help="run the stages in order into one run folder",
                       description="Run the pipeline's stages in order. A finished stage is reused unless "
                                   "--overwrite is given.")
    p.add_argument("--run-dir", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--preset", default="tiny", choices=PRESET_CHOICES, help="size preset (default: tiny)")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated stages to run, from: {','.join(STAGES)} (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace finished stages instead of reusing them")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_data_options(p)
    _add_pretrain_options(p)
    _add_sft_options(p)
    _add_reward_options(p)
    _add_ppo_options(p)

    p = _stage_parser(sub, "data", data, "clean, deduplicate and tokenize a corpus into packed blocks",
                      "RUN_DIR/data/", "replace a finished data stage")
    _add_data_options(p)

    p = _stage_parser(sub, "pretrain", pretrain, "train a language model on the data stage's blocks or on text",
                      "RUN_DIR/pretrain/", "start again instead of reusing or resuming")
    p.add_argument("--text-field", help="field holding the text in jsonl/parquet data")
    _add_pretrain_options(p)

    p = _stage_parser(sub, "sft", sft, "supervised fine-tuning (full or LoRA) on conversations",
                      "RUN_DIR/sft/ (RUN_DIR/lora/ with --lora)", "replace a finished SFT stage")
    _add_sft_options(p)

    p = _stage_parser(sub, "reward", reward, "train a reward model on preference pairs (and your labels)",
                      "RUN_DIR/reward/", "replace a finished reward stage")
    _add_reward_options(p)

    p = _stage_parser(sub, "ppo", ppo, "RLHF with llmkit's PPO against the reward model", "RUN_DIR/ppo/",
                      "replace a finished PPO stage")
    _add_ppo_options(p)
    for method in trl_methods.METHODS:
        p = _stage_parser(sub, method, trl_methods, f"{method.upper()} through TRL, compared like PPO",
                          f"RUN_DIR/{method}/", f"replace a finished {method} stage")
        p.add_argument("--rl-steps", type=int, help="optimizer steps")
        p.add_argument("--beta", type=float, help="KL coefficient (GRPO, RLOO) or DPO's beta")
        p.add_argument("--rl-prompts", help="prompts (GRPO, RLOO): jsonl with a `prompt`")
        p.add_argument("--preferences", help="preference pairs (DPO; default: the bundled pairs)")

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
    return ap


def _add_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--auth", help="USER:PASSWORD required to open the app (use it whenever --host exposes it)")
    p.add_argument("--share", action="store_true", help="open a public Gradio share link (off by default)")


def _auth(args: argparse.Namespace):
    if not args.auth:
        return None
    if ":" not in args.auth:
        raise DataError(f"--auth {args.auth!r}: give USER:PASSWORD")
    return tuple(args.auth.split(":", 1))


def label_items(args: argparse.Namespace):
    """The items `llmkit label` shows; sampled items are written once, so every reopen shows the same ones."""
    from llmkit.labels import load_items, sample_items, write_items
    from llmkit.loaders import bundled_path, read_jsonl

    if args.items:
        return load_items(args.items)
    kept = Path(args.run_dir) / "label_items.jsonl"
    if kept.exists():
        return load_items(kept)
    checkpoint = Path(args.from_checkpoint) if args.from_checkpoint else Path(args.run_dir) / "sft"
    if not (checkpoint / "config.json").exists():
        raise DataError(f"nothing to label: pass --items FILE (preference pairs or {{prompt, responses}} rows) or "
                        f"--from-checkpoint DIR; {checkpoint} is not a model folder (run SFT first for the default)")
    rows = read_jsonl(args.prompts or bundled_path("rl_prompts_train.jsonl"))[: args.count]
    if not rows or any("prompt" not in r for r in rows):
        raise DataError(f"{args.prompts}: every row needs a `prompt` (a string or a list of messages)")
    items = sample_items(checkpoint, [r["prompt"] for r in rows])
    kept.parent.mkdir(parents=True, exist_ok=True)
    write_items(kept, items)
    print(f"sampled {len(items)} items from {checkpoint} into {kept}")
    return items


def serve_chat(args: argparse.Namespace) -> int:
    from widgets.chat import ChatCompare, launch

    auth = _auth(args)
    app = ChatCompare(args.run_dir, args.labels)
    print(f"checkpoints: {', '.join(app.available)}; votes go to {app.labels.path}", flush=True)
    launch(app.build(), host=args.host, port=args.port, share=args.share, auth=auth, block=True)
    return 0


def serve_labels(args: argparse.Namespace) -> int:
    from widgets.annotate import AnnotationApp, launch

    auth = _auth(args)
    items = label_items(args)
    labels = Path(args.labels) if args.labels else Path(args.run_dir) / "labels.jsonl"
    app = AnnotationApp(items, labels, args.annotator)
    print(f"{len(items)} items; labels go to {labels}", flush=True)
    launch(app.build(), host=args.host, port=args.port, share=args.share, auth=auth, block=True)
    return 0


def stage_config(stage: str, args: argparse.Namespace):
    if stage == "data":
        return _data_config(args)
    if stage == "pretrain":
        return _pretrain_config(args)
    if stage == "sft":
        return _sft_config(args)
    if stage == "reward":
        return _reward_config(args)
    if stage == "ppo":
        return _ppo_config(args)
    if stage in trl_methods.METHODS:
        return _method_config(stage, args)
    raise ValueError(f"unknown stage {stage!r}; available: {', '.join(STAGES)}")


def run_stage(stage: str, args: argparse.Namespace):
    """One stage, on this process and any others `accelerate launch` started beside it."""
    return launch.run_stage(stage, stage_config(stage, args), args.run_dir, overwrite=args.overwrite,
                            progress=not args.quiet and runs.is_main_process())


def _quiet_libraries() -> None:
    """--quiet: no progress bars from the libraries either (transformers' weight loading and saving, the
    datasets maps inside TRL's trainers)."""
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    datasets_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        _quiet_libraries()
    if args.command in ("label", "chat"):
        try:
            return serve_labels(args) if args.command == "label" else serve_chat(args)
        except (DataError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.command == "pipeline" else [args.command]
    unknown = [s for s in stages if s not in STAGES + EXTRA_STAGES]
    if unknown:
        print(f"error: unknown stage(s) {', '.join(unknown)}; available: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    timings: dict[str, float | None] = {}
    try:
        for i, stage in enumerate(stages, 1):
            if len(stages) > 1 and not args.quiet and runs.is_main_process():
                print(f"== stage {i}/{len(stages)}: {stage} ==", flush=True)
            start = time.perf_counter()
            result = run_stage(stage, args)
            took = time.perf_counter() - start
            timings[stage] = None if result.reused else took
            if not runs.is_main_process():  # under `accelerate launch` the main process reports
                continue
            status = "reused (finished earlier; --overwrite to redo)" if result.reused else f"done in {took:.1f} s"
            print(f"[{stage}] {status} -> {result.output_dir}")
            report = Path(result.output_dir) / "report.md"
            if report.exists() and not result.reused:
                print(report.read_text(encoding="utf-8"))
            if stage == "pretrain" and not result.reused:
                m = result.metrics
                print(f"  val loss {m['val_loss']:.3f} · {m['val_bpb']:.3f} bits/byte · {m['tokens_per_s']:.0f} tok/s"
                      f" · MFU {m['mfu']:.0%}" + (f" · fact completion {m['fact_completion']:.2f}" if "fact_completion" in m else ""))
            if stage == "sft" and not result.reused:
                m = result.metrics
                line = f"  {m['method']} SFT · {m['trainable_fraction']:.1%} of parameters trained · eval loss {m['eval_loss']:.3f}"
                if "qa_heldout" in m:
                    line += (f" · QA held-out {m['qa_heldout']:.2f} (base {m['base_qa_heldout']:.2f})"
                             f" · trained {m['qa_trained']:.2f}")
                print(line)
            if stage == "reward" and not result.reused:
                m = result.metrics
                line = (f"  pairwise accuracy {m['eval_accuracy']:.2f} on {m['eval_pairs']} eval pairs · margin "
                        f"{m['eval_margin']:.2f} · {m['train_pairs']} train pairs ({m['train_pairs_from_labels']} from labels)")
                if "oracle_agreement" in m:
                    line += f" · agrees with the oracle on {m['oracle_agreement']:.0%} of fresh SFT answer pairs"
                print(line)
            if stage in ("ppo", *trl_methods.METHODS) and not result.reused:
                m = result.metrics
                line = (f"  RM score {m['eval_rm_score']:.2f} (SFT {m['eval_rm_score_sft']:.2f}) · KL {m['eval_kl_per_token']:.3f}"
                        f"/token · length {m['eval_response_length']:.0f} (SFT {m['eval_response_length_sft']:.0f})")
                if "oracle_win_rate" in m:
                    line += (f" · oracle win-rate vs SFT {m['oracle_win_rate']:.2f} · QA held-out {m['qa_heldout']:.2f}"
                             f" (SFT {m['sft_qa_heldout']:.2f}) · rude or rambling {m['eval_habit_rate']:.0%}"
                             f" (SFT {m['eval_habit_rate_sft']:.0%})")
                print(line)
    except (DataError, pretrain.PretrainError, sft.SFTError, reward.RewardError, ppo.PPOError, StageExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "pipeline" and runs.is_main_process():
        from llmkit.report import write_report

        print(f"report: {write_report(args.run_dir, timings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
