"""LoRA SFT on a real-sized open model: llmkit's SFT stage against a plain TRL `SFTTrainer` script, side by side.

    python benchmarks/open_model.py [--steps 20] [--untrained-rows] [--markdown]

The model is a random-initialised stand-in with Qwen2.5-0.5B's shape (24 layers, width 896, MLP 4864, 14 query
and 2 key/value heads, 151,936 tied embedding rows: 494 M parameters) and Qwen2.5's chat template, with a
512-token tokenizer trained here on the bundled corpus (no weights can be downloaded). Both sides fine-tune it,
each in a fresh process, on the same conversations (the first `8 × --steps` bundled ones: one pass) with the same
settings: LoRA r 8, α 16, dropout 0.05 on every linear layer, learning rate 3e-3 on a cosine schedule, 8
conversations a step in 2 micro-batches of 4 drawn at random, at most 256 tokens each, float32 on the CPU. llmkit's side is
`llmkit.sft.run` (its assistant mask for any template, its length-balanced micro-batches, the merged model and the
adapter saved); the baseline is the script a TRL user would write (`SFTTrainer` with a `LoraConfig`, then
`merge_and_unload` and `save_pretrained`). Tokens/s is the conversations' tokens over the time `train()` took;
peak memory is each process's peak resident set, loading and saving included.

A third run is llmkit's with its default micro-batches instead: each step's 8 conversations sorted by length
and cut into 2 micro-batches of about equal cost (`balance_lengths`), which made the tiny preset's SFT steps
1.41× faster (`benchmarks/balanced_batches.py`).

With `--untrained-rows`, a fourth run is llmkit's on the same model with its chat tokens' embedding rows set to
about zero, as Llama 3 base leaves its chat tokens: those rows then train beside the adapter
(`sft.rows_to_train`), and its memory shows what that costs.

TRL's `SFTConfig` turns bf16 on by default, on a CPU too (autocast); the baseline sets `bf16=False` so that both
sides compute in float32, as llmkit does on a CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from data_stage import provenance, table

QWEN2_5_0_5B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                "num_key_value_heads": 2, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
                "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "vocab_size": 151936}
SETTINGS = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "learning_rate": 3e-3, "batch": 8, "micro_batch": 4,
            "max_length": 256}

LLMKIT = """
import json, resource, sys
from pathlib import Path
from llmkit import sft
folder, train, evals, run_dir, steps, s = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
balance = sys.argv[7] == "balanced"
config = sft.SFTConfig(base_model=folder, train_data=train, eval_data=evals, lora=True, max_steps=steps, balance_lengths=balance,
                       batch_size=s["batch"], micro_batch_size=s["micro_batch"], max_length=s["max_length"],
                       lora_r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
                       lora_learning_rate=s["learning_rate"], eval_every=10**6, save_every=0, mixed_precision="no")
result = sft.run(config, run_dir, progress=False)
print(json.dumps({"seconds": result.metrics["train_seconds"], "steps": result.metrics["steps"],
                  "eval_loss": result.metrics["eval_loss"],
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

TRL = """
import json, resource, sys, time
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
folder, train, evals, out, steps, s = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), json.loads(sys.argv[6])
model = AutoModelForCausalLM.from_pretrained(folder)
tokenizer = AutoTokenizer.from_pretrained(folder)
rows, eval_rows = ([json.loads(line) for line in open(path)] for path in (train, evals))
args = SFTConfig(output_dir=out, per_device_train_batch_size=s["micro_batch"],
                 gradient_accumulation_steps=s["batch"] // s["micro_batch"], learning_rate=s["learning_rate"],
                 lr_scheduler_type="cosine", warmup_steps=0.05, max_steps=steps, max_length=s["max_length"],
                 assistant_only_loss=True, activation_checkpointing=False, bf16=False, logging_steps=1, save_strategy="no",
                 report_to=[], use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0)
lora = LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
                  target_modules="all-linear", task_type="CAUSAL_LM")
trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                     eval_dataset=Dataset.from_list(eval_rows), processing_class=tokenizer, peft_config=lora)
start = time.perf_counter()
trainer.train()
seconds = time.perf_counter() - start
eval_loss = trainer.evaluate()["eval_loss"]
trainer.model.merge_and_unload().save_pretrained(out + "/model")
tokenizer.save_pretrained(out + "/model")
logs = [r for r in trainer.state.log_history if "loss" in r]
print(json.dumps({"seconds": seconds, "steps": trainer.state.global_step, "eval_loss": eval_loss,
                  "trl_tokens": logs[-1].get("num_tokens"),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_stand_in(folder: Path) -> tuple[int, object]:
    """A random Qwen2.5-0.5B-shaped model with a tokenizer trained on the bundled corpus; (parameters, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from llmkit import families
    from llmkit.loaders import bundled_path, read_jsonl

    texts = [r["text"] for r in read_jsonl(bundled_path("corpus.jsonl"))]
    tokenizer = families.build_tokenizer("qwen2.5", texts)
    config = Qwen2Config(**QWEN2_5_0_5B, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters()), tokenizer


def untrained_chat_rows(folder: Path, out: Path) -> Path:
    """A copy of the model whose chat tokens' embedding rows are about zero (as Llama 3 base leaves its own)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmkit.sft import chat_token_ids

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.get_input_embeddings().weight[chat_token_ids(tokenizer)] = 1e-6
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run_side(script: str, *args) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps (8 conversations each)")
    parser.add_argument("--untrained-rows", action="store_true",
                        help="a third run: llmkit on the model with its chat tokens' rows untrained (they train)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables for BENCHMARKS.md")
    args = parser.parse_args()
    from llmkit.chat_format import tokenize_conversations
    from llmkit.loaders import bundled_path, read_jsonl

    with tempfile.TemporaryDirectory(prefix="llmkit-open-model-") as tmp:
        work = Path(tmp)
        folder = work / "qwen2.5-0.5b-shaped"
        params, tokenizer = build_stand_in(folder)
        rows = [{"messages": r["messages"]} for r in read_jsonl(bundled_path("sft_train.jsonl"))]
        train, evals = rows[: SETTINGS["batch"] * args.steps], rows[-8:]
        for name, part in (("train", train), ("eval", evals)):
            (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        tokens = sum(min(len(r["input_ids"]), SETTINGS["max_length"]) for r in tokenize_conversations(tokenizer, train))
        common = (folder, work / "train.jsonl", work / "eval.jsonl")
        ours = run_side(LLMKIT, *common, work / "run", args.steps, json.dumps(SETTINGS), "random")
        print(f"llmkit: {ours}", file=sys.stderr, flush=True)
        trl = run_side(TRL, *common, work / "trl", args.steps, json.dumps(SETTINGS))
        print(f"TRL: {trl}", file=sys.stderr, flush=True)
        balanced = run_side(LLMKIT, *common, work / "balanced", args.steps, json.dumps(SETTINGS), "balanced")
        print(f"llmkit, length-balanced: {balanced}", file=sys.stderr, flush=True)
        rows = None
        if args.untrained_rows:
            untrained = untrained_chat_rows(folder, work / "untrained-chat-rows")
            rows = run_side(LLMKIT, untrained, *common[1:], work / "rows", args.steps, json.dumps(SETTINGS), "random")
            print(f"llmkit, chat rows training: {rows}", file=sys.stderr, flush=True)

    md = args.markdown
    out = []
    if md:
        out += ["## LoRA SFT on an open model's shape", "", provenance(), ""]
    out.append(f"A random Qwen2.5-0.5B-shaped model ({params / 1e6:.0f} M parameters), {args.steps} steps of LoRA SFT "
               f"on {len(train)} conversations ({tokens:,} tokens), float32, each side in a fresh process:\n")
    out.append(table(["trainer", "train seconds", "tokens/s", "eval loss after", "peak memory (MB)"],
                     [[name, f"{r['seconds']:.1f}", f"{tokens / r['seconds']:.0f}", f"{r['eval_loss']:.3f}",
                       f"{r['peak_mb']:.0f}"]
                      for name, r in (("llmkit `sft.run` (lora, random micro-batches as TRL's)", ours),
                                      ("plain TRL `SFTTrainer` + peft", trl),
                                      ("llmkit `sft.run` (lora, its default length-balanced micro-batches)", balanced),
                                      ("llmkit, untrained chat rows (they train too)", rows)) if r],
                     md, right={1, 2, 3, 4}))
    out.append(f"\nllmkit: {trl['seconds'] / ours['seconds']:.2f}× the baseline's tokens/s (target ≥ 0.95), "
               f"{ours['peak_mb'] / trl['peak_mb']:.3f}× its peak memory (target ≤ 1.05). TRL counted "
               f"{trl['trl_tokens']:,.0f} tokens in its batches.")
    out.append(f"With its default length-balanced micro-batches llmkit runs at {trl['seconds'] / balanced['seconds']:.2f}× "
               f"the baseline's tokens/s and {balanced['peak_mb'] / trl['peak_mb']:.3f}× its peak memory.")
    if rows:
        out.append(f"Training the chat tokens' rows too: {rows['peak_mb'] / trl['peak_mb']:.3f}× the baseline's "
                   "peak memory.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
