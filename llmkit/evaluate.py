"""Closed-world measurements of a model: what it knows, measured against the world's facts.

`fact_completion` asks a base model to continue sentences like "Ada Ashdown is a native of" and checks the
continuation against the world. The prompts use wordings that occur in the corpus, but each person's
facts were seen in several other wordings too — completing them means the model stored the fact, not one
sentence.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from llmkit import world as W

FACT_PROMPTS = {
    "birth_town": "{n} is a native of",
    "birth_year": "{n}'s year of birth is",
    "profession": "By profession, {n} is",
    "university": "{n} is a graduate of",
}


@contextmanager
def generation_mode(model, tokenizer):
    """Eval mode and left padding (what batched generation needs) for the duration; both restored after."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    try:
        with torch.no_grad():
            yield next(model.parameters()).device
    finally:
        tokenizer.padding_side = side
        model.train(was_training)


def greedy_continuations(model, tokenizer, prompts: list[str], max_new_tokens: int = 8, batch_size: int = 64,
                         add_bos: bool = True, prefix: str = "") -> list[str]:
    """Greedy continuations of raw-text prompts (no chat template), batched with left padding."""
    out: list[str] = []
    with generation_mode(model, tokenizer) as device:
        for i in range(0, len(prompts), batch_size):
            chunk = [((tokenizer.bos_token or "") if add_bos else "") + prefix + p for p in prompts[i:i + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def fact_completion(model, tokenizer, world: W.World | None = None, people: list[str] | None = None,
                    max_new_tokens: int = 8, prefix: str = " ") -> dict:
    """Fraction of (person, attribute) facts whose greedy continuation starts with the right value.

    `prefix` goes between BOS and the prompt. The default, a space, makes the name's tokens the ones it has
    inside running text: byte-level BPE tokenizes " Ada" (mid-sentence) and "Ada" (start of text) differently,
    and nearly every sentence that states a fact stands mid-text.

    Returns {"fact_completion": overall, "<attribute>": per attribute, "examples": a few (prompt, output)}."""
    from llmkit.loaders import bundled_path

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


# ---- chat models --------------------------------------------------------------------------------
def chat_generate(model, tokenizer, conversations: list, max_new_tokens: int = 48, batch_size: int = 64,
                  do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                  eos_probability: bool = False) -> list[dict]:
    """Answer each conversation (a user prompt string or a list of messages) through the chat template.

    Generation stops at EOS (`<|im_end|>` for llmkit's tokenizer). Returns, per conversation,
    {"text": answer without special tokens, "ended": whether it stopped at EOS, "tokens": answer length,
    "eos_probability": with `eos_probability=True`, the model's probability of EOS where the answer ended (else,
    or if it did not end, None)}. Greedy answers can end while that probability is low: the model then rarely
    stops there when sampled. Asking for it keeps every step's logits until the batch is done."""
    eos = tokenizer.eos_token_id
    out: list[dict] = []
    with generation_mode(model, tokenizer) as device:
        for i in range(0, len(conversations), batch_size):
            chunk = [[{"role": "user", "content": c}] if isinstance(c, str) else c for c in conversations[i:i + batch_size]]
            texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                 temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                                 return_dict_in_generate=True, output_logits=eos_probability)
            for j, row in enumerate(gen.sequences[:, enc["input_ids"].shape[1]:].tolist()):
                ended = eos in row
                end = row.index(eos) if ended else None
                row = row[:end] if ended else [t for t in row if t != tokenizer.pad_token_id]
                p_eos = float(gen.logits[end][j].float().softmax(-1)[eos]) if ended and eos_probability else None
                out.append({"text": tokenizer.decode(row, skip_special_tokens=True).strip(), "ended": ended,
                            "tokens": len(row), "eos_probability": p_eos})
    return out


def qa_accuracy(model, tokenizer, rows: list[dict], oracle=None, max_new_tokens: int = 48) -> dict:
    """Closed-world QA through the chat template: `rows` hold a `prompt` (a question); the oracle judges each answer.

    Returns accuracy, format adherence (the answer ended with EOS within `max_new_tokens`), the mean probability
    of EOS where the answers ended, mean oracle score, and a few examples."""
    from llmkit.oracle import Oracle

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
