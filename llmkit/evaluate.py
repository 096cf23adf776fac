"""Measurements of a model, in one place for every stage that reports them.

On the closed world (facts known, answers judged by the oracle):
- `fact_completion`: a base model continues "Ada Ashdown is a native of" — did pretraining store the fact?
  The prompts use wordings that occur in the corpus, but each person's facts were seen in several other
  wordings too: completing them means the model stored the fact, not one sentence.
- `qa_accuracy` / `closed_world_qa`: a chat model answers questions about people the SFT data names (trained)
  and people it never names (held-out: knowledge that can only come from pretraining), beside a reference's.
- `compare_policies`: an RL policy against the SFT model it started from, on held-out prompts: reward-model
  and oracle scores, oracle win-rate, KL per token, length, and each answer's first flaw; `evaluate_policy`
  adds closed-world QA to it, as every RL stage reports.
- `oracle_agreement`: does a reward model order two answers the way the oracle does?

Anywhere: `pairwise_accuracy` of a reward model on preference pairs.
"""

from __future__ import annotations

from collections import Counter

import torch

from llmkit import runs
from llmkit import world as W
from llmkit.formats import answer_text, prompt_text
from llmkit.generation import chat_generate, generate, greedy_continuations, response_logprobs
from llmkit.loaders import bundled_path, read_jsonl
from llmkit.oracle import Oracle
from llmkit.verifier import is_correct

FACT_PROMPTS = {
    "birth_town": "{n} is a native of",
    "birth_year": "{n}'s year of birth is",
    "profession": "By profession, {n} is",
    "university": "{n} is a graduate of",
}
QA_SPLITS = ("heldout", "trained")
# With verifiable tasks, the sampled comparison with SFT (KL, reward-model score, length) is made on the first 100:
# each costs 2 × samples_per_prompt answers, and the exact-answer accuracy is measured greedily on all of them.
SAMPLED_TASKS = 100


def fact_completion(model, tokenizer, world: W.World | None = None, people: list[str] | None = None,
                    max_new_tokens: int = 8, prefix: str = " ") -> dict:
    """Fraction of (person, attribute) facts whose greedy continuation starts with the right value.

    `prefix` goes between BOS and the prompt. The default, a space, makes the name's tokens the ones it has
    inside running text: byte-level BPE tokenizes " Ada" (mid-sentence) and "Ada" (start of text) differently,
    and nearly every sentence that states a fact stands mid-text.

    Returns {"fact_completion": overall, "<attribute>": per attribute, "examples": a few (prompt, output)}."""
    world = world or W.World.load(bundled_path("world.json"))
    persons = [world.person(n) for n in people] if people else world.people
    result: dict = {}
    examples = []
    correct_total = 0
    for attr, template in FACT_PROMPTS.items():
        prompts = [template.format(n=p.name) for p in persons]
        outs = greedy_continuations(model, tokenizer, prompts, max_new_tokens, prefix=prefix)
        correct = 0
        for p, prompt, text in zip(persons, prompts, outs):
            answer = text.strip()
            if attr == "profession":  # "a baker." / "an architect."
                answer = answer.split(" ", 1)[1] if answer.split(" ", 1)[0] in ("a", "an") and " " in answer else answer
            correct += answer.startswith(str(getattr(p, attr)))
            if len(examples) < 8 and p is persons[0]:
                examples.append({"prompt": prompt, "output": text, "expected": str(getattr(p, attr))})
        result[attr] = correct / len(persons)
        correct_total += correct
    result["fact_completion"] = correct_total / (len(persons) * len(FACT_PROMPTS))
    result["examples"] = examples
    return result


def qa_accuracy(model, tokenizer, rows: list[dict], oracle=None, max_new_tokens: int = 48) -> dict:
    """Closed-world QA through the chat template: `rows` hold a `prompt` (a question); the oracle judges each
    greedy answer. Returns accuracy, format adherence (the answer ended with EOS within `max_new_tokens`), the
    mean probability of EOS where the answers ended, the mean oracle score, and a few examples."""
    oracle = oracle or Oracle()
    answers = chat_generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens, eos_probability=True)
    verdicts = [oracle.judge(r["prompt"], a["text"]) for r, a in zip(rows, answers)]
    correct = [v.correct >= 1.0 for v in verdicts]  # what Oracle.is_correct asks
    n = max(1, len(rows))
    ends = [a["eos_probability"] for a in answers if a["ended"]]
    return {"accuracy": sum(correct) / n, "format_ok": sum(a["ended"] for a in answers) / n,
            "eos_probability": sum(ends) / len(ends) if ends else 0.0,
            "oracle_score": sum(v.score for v in verdicts) / n,
            "examples": [{"prompt": r["prompt"], "answer": a["text"], "correct": c, "expected": r.get("answer")}
                         for r, a, c in list(zip(rows, answers, correct))[:8]]}


def closed_world_qa(model, tokenizer, limit: int | None = None, reference=None, reference_name: str = "reference",
                    reference_dir=None) -> dict:
    """QA on the bundled held-out and trained questions (the first `limit` of each): `qa_heldout`, `qa_trained`,
    `qa_questions`, `format_ok_*`, `eos_probability_*` and `qa_*_examples` of the model. With a `reference` model
    also `<reference_name>_qa_heldout` and `_trained` — read from `reference_dir`'s metrics.json instead where that
    folder (an llmkit SFT run) answered the same questions: the same greedy answers by this function, and none to
    generate again."""
    known = runs.read_metrics(reference_dir) if reference_dir and runs.finished(reference_dir) else {}
    out: dict = {"qa_questions": {}}
    for split in QA_SPLITS:
        rows = read_jsonl(bundled_path(f"qa_{split}.jsonl"))[:limit]
        r = qa_accuracy(model, tokenizer, rows)
        out["qa_questions"][split] = len(rows)
        out.update({f"qa_{split}": r["accuracy"], f"format_ok_{split}": r["format_ok"],
                    f"eos_probability_{split}": r["eos_probability"], f"qa_{split}_examples": r["examples"]})
        if reference is not None:
            same = known.get("qa_questions", {}).get(split) == len(rows) and f"qa_{split}" in known
            out[f"{reference_name}_qa_{split}"] = (known[f"qa_{split}"] if same
                                                   else qa_accuracy(reference, tokenizer, rows)["accuracy"])
    return out


def compare_policies(policy, reference, tokenizer, rm, prompts: list, max_new_tokens: int = 40,
                     temperature: float = 0.7, samples_per_prompt: int = 4, seed: int = 0, oracle=None) -> dict:
    """The trained policy against the reference (SFT) on held-out prompts, both sampled at `temperature`,
    `samples_per_prompt` answers each, with the same seed: RM score, oracle score and win-rate (ties count half),
    per-token KL to the reference on the policy's own samples, and response length. On the closed world also
    each answer's first flaw by the oracle (`Oracle.flaw`), and the share of answers that are rude or rambling:
    the demonstrators' habits that SFT imitated and the preference rule dislikes. `rows`: every comparison."""
    prompts = list(prompts) * samples_per_prompt
    torch.manual_seed(seed + 1)
    mine = generate(policy, tokenizer, prompts, max_new_tokens, temperature)
    torch.manual_seed(seed + 1)
    theirs = generate(reference, tokenizer, prompts, max_new_tokens, temperature)
    with torch.no_grad():
        logp = response_logprobs(policy, mine.input_ids, mine.attention_mask, mine.n_prompt, temperature)
        ref_logp = response_logprobs(reference, mine.input_ids, mine.attention_mask, mine.n_prompt, temperature)
    kl = (logp - ref_logp) * mine.mask  # k1: log π − log π_ref on samples of π
    out = {} if rm is None else {"eval_rm_score": sum(rm.score(prompts, mine.texts)) / len(prompts),
                                 "eval_rm_score_sft": sum(rm.score(prompts, theirs.texts)) / len(prompts)}
    out |= {"eval_kl_per_token": (kl.sum() / mine.mask.sum().clamp(min=1)).item(),
           "eval_kl_per_sequence": kl.sum(-1).mean().item(),
           "eval_response_length": mine.mask.sum(-1).mean().item(),
           "eval_response_length_sft": theirs.mask.sum(-1).mean().item(),
           "eval_eos_fraction": mine.ended.float().mean().item()}
    rows = [{"prompt": prompt_text(p), "policy": a, "sft": b} for p, a, b in zip(prompts, mine.texts, theirs.texts)]
    if oracle is not None:
        wins = total_mine = total_sft = 0.0
        for row, p, a, b in zip(rows, prompts, mine.texts, theirs.texts):
            sa, sb = oracle.score(p, a), oracle.score(p, b)
            row.update(oracle_policy=sa, oracle_sft=sb, flaw_policy=oracle.flaw(p, a), flaw_sft=oracle.flaw(p, b))
            total_mine, total_sft = total_mine + sa, total_sft + sb
            wins += 1.0 if sa > sb else 0.5 if sa == sb else 0.0
        habits = ("rude", "rambling")
        _, low, high = win_rate_ci(rows, len(prompts) // samples_per_prompt)
        out.update(eval_oracle_score=total_mine / len(prompts), eval_oracle_score_sft=total_sft / len(prompts),
                   oracle_win_rate=wins / len(prompts), oracle_win_rate_ci_low=low, oracle_win_rate_ci_high=high,
                   eval_habit_rate=sum(r["flaw_policy"] in habits for r in rows) / len(rows),
                   eval_habit_rate_sft=sum(r["flaw_sft"] in habits for r in rows) / len(rows),
                   eval_flaws=dict(Counter(r["flaw_policy"] for r in rows)),
                   eval_flaws_sft=dict(Counter(r["flaw_sft"] for r in rows)))
    out["rows"] = rows
    return out


def win_rate_ci(rows: list[dict], n_prompts: int) -> tuple[float, float, float]:
    """The oracle win-rate of `rows` (compare_policies' comparisons: prompt i's samples are rows i, i + n_prompts,
    ...) with its 95 % interval over prompts: each prompt's own win-rate (ties count half) is one value, so several
    answers to one prompt do not pass for independent evidence."""
    per_prompt: dict[int, list[float]] = {}
    for i, r in enumerate(rows):
        a, b = r["oracle_policy"], r["oracle_sft"]
        per_prompt.setdefault(i % max(1, n_prompts), []).append(1.0 if a > b else 0.5 if a == b else 0.0)
    return mean_ci([sum(v) / len(v) for v in per_prompt.values()])


def mean_ci(values: list[float], z: float = 1.96) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its 95 % confidence interval (normal approximation, the
    standard error from the sample's own spread) — for a paired difference, the values are the differences."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = sum(values) / n
    se = (sum((v - mean) ** 2 for v in values) / (n - 1) / n) ** 0.5 if n > 1 else float("inf")
    return mean, mean - z * se, mean + z * se


def task_accuracy(policy, reference, tokenizer, prompts: list, answers: list, max_new_tokens: int = 48) -> dict:
    """Verifiable tasks: the share of `prompts` whose greedy answer ends in the exact `answers` (`llmkit.verifier`),
    for the policy and the reference (SFT), and the policy's gain with its 95 % interval over the prompts (paired:
    the same questions, one greedy answer each). Also the share of the policy's answers cut at `max_new_tokens`,
    and `task_rows`: every question with both answers."""
    mine = chat_generate(policy, tokenizer, prompts, max_new_tokens)
    theirs = chat_generate(reference, tokenizer, prompts, max_new_tokens)
    right = [is_correct(a["text"], e) for a, e in zip(mine, answers)]
    right_sft = [is_correct(a["text"], e) for a, e in zip(theirs, answers)]
    gain, low, high = mean_ci([float(a) - float(b) for a, b in zip(right, right_sft)])
    n = max(1, len(prompts))
    rows = [{"prompt": prompt_text(p), "answer": e, "policy": a["text"], "sft": b["text"], "policy_correct": c,
             "sft_correct": d} for p, e, a, b, c, d in zip(prompts, answers, mine, theirs, right, right_sft)]
    return {"task_accuracy": sum(right) / n, "task_accuracy_sft": sum(right_sft) / n, "task_gain": gain,
            "task_gain_ci_low": low, "task_gain_ci_high": high, "task_questions": len(prompts),
            "task_cut_at_cap": sum(not a["ended"] for a in mine) / n, "task_rows": rows}


def evaluate_policy(model, reference, tokenizer, rm, prompts: list, config, reference_dir=None, oracle=None,
                    answers: list | None = None, more_tasks: dict[str, tuple[list, list]] | None = None) -> dict:
    """What every RL stage reports: `compare_policies` on `prompts` with the config's `max_new_tokens`,
    `temperature`, `eval_samples_per_prompt` and `seed`, and, on the closed world (an `oracle`), closed-world QA
    against the reference (the SFT model, whose own QA is read from `reference_dir` when it asked the same
    questions). With `answers` (verifiable tasks) also `task_accuracy` against the reference, and no oracle
    win-rate (the oracle's preference rule is for questions about facts); `more_tasks` {name: (prompts, answers)}
    are more task sets, measured the same way under keys that start with their name instead of "task" (every
    question in `task_rows`, with its set's name under "split"). `rows` holds every comparison;
    `warnings` says when most answers ran out of tokens."""
    sampled = prompts if answers is None else prompts[:SAMPLED_TASKS]
    out = compare_policies(model, reference, tokenizer, rm, sampled, config.max_new_tokens, config.temperature,
                           config.eval_samples_per_prompt, config.seed, oracle if answers is None else None)
    if answers is not None:
        out.update(task_accuracy(model, reference, tokenizer, prompts, answers, config.max_new_tokens))
        for row in out["task_rows"]:
            row["split"] = "task"
        for name, (more_prompts, more_answers) in (more_tasks or {}).items():
            more = task_accuracy(model, reference, tokenizer, more_prompts, more_answers, config.max_new_tokens)
            out["task_rows"] += [{**row, "split": name} for row in more.pop("task_rows")]
            out.update({name + k[len("task"):]: v for k, v in more.items()})
    if out["eval_eos_fraction"] < 0.5:
        out["warnings"] = [f"{1 - out['eval_eos_fraction']:.0%} of its answers to the evaluation prompts ran out of "
                           f"tokens (max_new_tokens={config.max_new_tokens}) before they ended their turn: raise "
                           "max_new_tokens, or check that the SFT model learned to stop"]
    if oracle is not None:
        out.update(closed_world_qa(model, tokenizer, config.eval_limit, reference, "sft", reference_dir))
    return out


def pairwise_accuracy(rm, rows: list[dict]) -> dict:
    """How often a reward model scores the chosen answer above the rejected one, over preference rows
    {"prompt", "chosen", "rejected"} (TRL's conversational format), the mean margin, and every pair's scores."""
    prompts = [r["prompt"] for r in rows]
    chosen = rm.score(prompts, [r["chosen"] for r in rows])
    rejected = rm.score(prompts, [r["rejected"] for r in rows])
    out = [{"prompt": prompt_text(r["prompt"]), "chosen": answer_text(r["chosen"]),
            "rejected": answer_text(r["rejected"]), "score_chosen": c, "score_rejected": j}
           for r, c, j in zip(rows, chosen, rejected)]
    n = max(1, len(rows))
    return {"accuracy": sum(c > j for c, j in zip(chosen, rejected)) / n,
            "margin": sum(c - j for c, j in zip(chosen, rejected)) / n, "rows": out}


def oracle_agreement(rm, policy, prompts: list, temperature: float = 1.0, seed: int = 0) -> dict:
    """Two answers per prompt sampled from the policy (the SFT model); where the oracle prefers one, how often
    does the RM prefer the same one? Also the correlation of RM and oracle scores, and every pair."""
    torch.manual_seed(seed)
    a = chat_generate(policy, rm.tokenizer, prompts, temperature=temperature)
    b = chat_generate(policy, rm.tokenizer, prompts, temperature=temperature)
    oracle = Oracle()
    rows, agree, decided = [], 0, 0
    rm_a, rm_b = rm.score(prompts, [x["text"] for x in a]), rm.score(prompts, [x["text"] for x in b])
    for p, x, y, ra, rb in zip(prompts, a, b, rm_a, rm_b):
        oa, ob = oracle.score(p, x["text"]), oracle.score(p, y["text"])
        if oa != ob and ra != rb:
            decided += 1
            agree += (oa > ob) == (ra > rb)
        rows.append({"prompt": prompt_text(p), "answer_a": x["text"], "answer_b": y["text"], "oracle_a": oa,
                     "oracle_b": ob, "rm_a": ra, "rm_b": rb})
    rm_all = rm_a + rm_b
    oracle_all = [r["oracle_a"] for r in rows] + [r["oracle_b"] for r in rows]
    return {"oracle_agreement": agree / decided if decided else float("nan"), "oracle_decided_pairs": decided,
            "oracle_rm_correlation": pearson(rm_all, oracle_all), "rows": rows}


def pearson(x: list[float], y: list[float]) -> float:
    t = torch.tensor([x, y], dtype=torch.float64)
    if len(x) < 2 or (t.std(dim=1) == 0).any():
        return float("nan")
    return float(torch.corrcoef(t)[0, 1])
