"""How much can RL win against SFT on the held-out prompts by sampling less noisily? The ceiling of sharpening.

    python benchmarks/rl_ceiling.py --run-dir runs/bench --markdown      # uses RUN_DIR/sft (and RUN_DIR/reward)

The RL stages' headline is the oracle win-rate of the policy against the SFT model on the first 100 held-out RL
prompts, four answers each, both sampled at temperature 0.7 (ties count half;
`llmkit.evaluate.compare_policies`). A policy that only learned to sample less noisily would answer like the SFT
model at a lower temperature, at the limit like its greedy decoding. This scores exactly those stand-ins against
SFT sampled at 0.7 with the comparison's seed, so a win-rate bar above the greedy row asks RL to know something
SFT does not. The row "habits cut out" is SFT's own answers at 0.7 with the demonstrators' habit formulas (the
rambling sentences and rude phrases of data_samples/generate.py) deleted and nothing else changed: what a policy
that dropped the habits perfectly, and re-drew no fact, would win. Per prompt kind, the oracle scores show where
the SFT model itself fails. With a reward model in RUN_DIR/reward, its mean score of each is shown too.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit.formats import read_prompts
from llmkit.generation import generate
from llmkit.loaders import bundled_path
from llmkit.oracle import Oracle
from llmkit.rl import ppo

REPO = Path(__file__).resolve().parents[1]


def habit_cutter():
    """A function that deletes the SFT demonstrations' habit formulas (data_samples/generate.py) from an answer."""
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("generate", REPO / "data_samples" / "generate.py")
    gen = module_from_spec(spec)
    spec.loader.exec_module(gen)
    pieces = list(gen.RAMBLE) + [part.strip() for template in gen.RUDE for part in template.split("{a}") if part.strip()]

    def cut(text: str) -> str:
        for piece in pieces:
            text = text.replace(piece, "")
        return " ".join(text.split())

    return cut


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default="runs/bench", type=Path)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=ppo.PPOConfig.max_new_tokens)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    sft_dir = args.run_dir / "sft"
    tokenizer = AutoTokenizer.from_pretrained(sft_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(sft_dir, local_files_only=True, dtype=torch.float32).eval()
    rm = None
    if (args.run_dir / "reward" / "config.json").exists():
        from llmkit.reward_model import RewardModel

        rm = RewardModel.load(args.run_dir / "reward", "cpu")
    prompts = read_prompts(bundled_path("rl_prompts_eval.jsonl"))[: args.prompts]
    prompts = prompts * ppo.PPOConfig.eval_samples_per_prompt  # the comparison's answers per prompt
    oracle = Oracle()
    seed = ppo.PPOConfig.seed + 1  # the seed compare_policies samples both sides with
    temperature = ppo.PPOConfig.temperature

    def answers(t: float | None) -> list[str]:
        torch.manual_seed(seed)
        return generate(model, tokenizer, prompts, args.max_new_tokens, t if t is not None else 0.0).texts

    baseline = answers(temperature)
    base_scores = [oracle.score(p, a) for p, a in zip(prompts, baseline)]
    cut = habit_cutter()
    rows, kinds = [], collections.defaultdict(dict)
    decodings = [("greedy", lambda: answers(None)), ("T = 0.3", lambda: answers(0.3)), ("T = 0.5", lambda: answers(0.5)),
                 (f"T = {temperature} (itself)", lambda: baseline),  # same seed: the same answers, not sampled again
                 (f"T = {temperature}, habits cut out", lambda: [cut(a) for a in baseline])]
    for name, decode in decodings:
        texts = decode()
        scores = [oracle.score(p, a) for p, a in zip(prompts, texts)]
        wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, base_scores)) / len(prompts)
        rm_score = sum(rm.score(prompts, texts)) / len(prompts) if rm else float("nan")
        rows.append((name, wins, sum(scores) / len(prompts), rm_score))
        by_kind = collections.defaultdict(list)
        for p, s in zip(prompts, scores):
            by_kind[oracle.parse(p)[0]].append(s)
        for k, v in by_kind.items():
            kinds[k][name] = (len(v) // ppo.PPOConfig.eval_samples_per_prompt, sum(v) / len(v))
    names = [r[0] for r in rows]
    if args.markdown:
        print(f"SFT model: {sft_dir}; {args.prompts} held-out RL prompts x {ppo.PPOConfig.eval_samples_per_prompt} "
              f"answers; baseline: SFT sampled at T = {temperature}, seed {seed}\n")
        print("| SFT decoded as | oracle win-rate vs SFT at T = 0.7 | oracle score | RM score |\n|---|---:|---:|---:|")
        for name, wins, score, rm_score in rows:
            print(f"| {name} | {wins:.2f} | {score:.3f} | {rm_score:.2f} |")
        print("\n| prompt kind | prompts | " + " | ".join(f"oracle, {n}" for n in names) + " |")
        print("|---|---:|" + "---:|" * len(names))
        for k, by in sorted(kinds.items(), key=lambda kv: -next(iter(kv[1].values()))[0]):
            n = next(iter(by.values()))[0]
            print(f"| {k} | {n} | " + " | ".join(f"{by[name][1]:.2f}" for name in names) + " |")
    else:
        for name, wins, score, rm_score in rows:
            print(f"{name:22s} win-rate {wins:.2f}  oracle {score:.3f}  RM {rm_score:.2f}")


if __name__ == "__main__":
    main()
