"""Generation: the one place llmkit turns a model's next-token probabilities into text (nanochat's `engine.py`).

    generate(model, tok, prompts, 40, temperature=0.7)   a batch of answers as tensors: PPO's rollouts
    response_logprobs(model, g.input_ids, ...)            the log-probabilities of those answers' tokens
    chat_generate(model, tok, prompts)                    the same, as text per prompt (greedy): evaluation, labels
    greedy_continuations(model, tok, ["Ada is"])          raw-text continuations of a base model
    stream(model, tok, ids, temperature=0.7)              one answer token by token: the chat app

A prompt is a user message (a string) or a list of messages, rendered with the chat template and its
generation prompt. Batches are left-padded, so every row's next token sits in the last column and the KV
cache serves the whole batch.

Every token is drawn one way, by `TokenSampler`: **temperature 0 is greedy**, everywhere; otherwise
transformers' temperature and top-p (nucleus) warpers, then one draw per row — no top-k, whatever a checkpoint's
generation config says. With `seeds=[...]` each row draws from its own random stream: the same prompt with the
same seed gets the same answer whatever else is in the batch, which is how PPO's rollouts come out the same on one
process and on N, each process generating its share of the batch; without, from torch's global RNG. A chat answer
stops at any of the template's end-of-turn tokens (`llmkit.chat_format.end_of_turn_ids`: llmkit's and Qwen's
<|im_end|>, Llama 3's <|eot_id|>, Gemma's <end_of_turn>, ... and the EOS).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from llmkit.chat_format import end_of_turn_ids, fit_roles
from llmkit.formats import as_messages


@contextmanager
def generation_mode(model, tokenizer):
    """Eval mode, left padding and no gradients for the duration; the model's mode and the tokenizer's padding
    side are restored after. Yields the model's device."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    try:
        with torch.no_grad():
            yield next(model.parameters()).device
    finally:
        tokenizer.padding_side = side
        model.train(was_training)


def chat_prompts(tokenizer, conversations: list) -> list[str]:
    """Each conversation through the chat template, ending with the assistant's header: what the model continues."""
    return [tokenizer.apply_chat_template(as_messages(fit_roles(tokenizer, c)), tokenize=False, add_generation_prompt=True)
            for c in conversations]


def fit_messages(tokenizer, conversations: list, room: int) -> tuple[list[list[dict]], int]:
    """Conversations whose chat-template prompt fits `room` tokens, for trainers that take messages rather than
    tokens (TRL's GRPO and RLOO): the oldest turns go first (a system message stays), then the oldest tokens of the
    first turn left. Returns (the conversations as messages, how many were cut)."""
    out, cut = [], 0
    for conversation in conversations:
        messages = as_messages(fit_roles(tokenizer, conversation))

        def length(ms: list[dict]) -> int:
            return len(tokenizer.apply_chat_template(ms, tokenize=True, add_generation_prompt=True,
                                                     return_dict=True)["input_ids"])

        if length(messages) > room:
            cut += 1
            system = messages[:1] if messages[0]["role"] == "system" else []
            rest = messages[len(system):]
            while len(rest) > 1 and length(system + rest) > room:
                rest = rest[1:]
            over = length(system + rest) - room
            if over > 0:  # one turn, still too long: its oldest tokens go
                ids = tokenizer(rest[0]["content"], add_special_tokens=False)["input_ids"]
                rest = [{**rest[0], "content": tokenizer.decode(ids[over:])}, *rest[1:]]
            messages = system + rest
        out.append(messages)
    return out, cut


@dataclass
class Generation:
    """A batch of answers, as the model produced them."""

    prompts: list
    input_ids: torch.Tensor  # (B, P + T): the left-padded prompt, then the answer (padding after its EOS)
    attention_mask: torch.Tensor
    n_prompt: int  # P: where the answers start
    mask: torch.Tensor  # (B, T) float: 1 on the answer's real tokens, through its EOS
    texts: list[str]  # the answers without special tokens
    ended: torch.Tensor  # (B,) bool: the answer stopped at EOS (else it ran out of tokens)
    eos_probability: list[float | None] | None = None  # with eos_probability=True: P(EOS) where each one ended
    prompts_cut: int = 0  # prompts too long for the context beside the answer, cut from the left


def context_length(model) -> int:
    """How many tokens the model's positions reach (its config's max_position_embeddings or n_positions); `model`
    may be the config itself."""
    config = getattr(model, "config", model)
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048)


def fit_to_context(prompt_ids: list[list[int]], max_new_tokens: int, context: int) -> tuple[list[list[int]], int, int]:
    """(prompts, max new tokens, how many prompts were cut) such that no prompt and its answer pass the context:
    the answer keeps at most half the context, and a prompt longer than the rest loses its oldest tokens (the
    latest turns, which the answer follows, stay)."""
    max_new_tokens = max(1, min(max_new_tokens, context // 2))
    room = context - max_new_tokens
    cut = sum(len(ids) > room for ids in prompt_ids)
    return [ids[-room:] for ids in prompt_ids], max_new_tokens, cut


def generate(model, tokenizer, conversations: list, max_new_tokens: int, temperature: float = 1.0,
             top_p: float = 1.0, use_cache: bool = True, eos_probability: bool = False,
             seeds: list[int] | None = None) -> Generation:
    """One answer per conversation, in one batch, never past the model's context (`fit_to_context`); greedy at
    temperature 0. `eos_probability`: also the model's probability of EOS at the position where each answer ended
    (greedy answers can end where that is low; sampled ones then rarely stop there) — it keeps every step's logits
    until the batch is done. `seeds` (one per conversation): row i draws its tokens from its own random stream
    seeded with seeds[i] instead of the global torch RNG shared by the batch."""
    stops, pad = end_of_turn_ids(tokenizer, getattr(model, "generation_config", None)), tokenizer.pad_token_id
    prompt_ids = tokenizer(chat_prompts(tokenizer, conversations), add_special_tokens=False)["input_ids"]
    prompt_ids, max_new_tokens, cut = fit_to_context(prompt_ids, max_new_tokens, context_length(model))
    if seeds is not None and len(seeds) != len(prompt_ids):
        raise ValueError(f"{len(seeds)} seeds for {len(prompt_ids)} conversations; give one seed per conversation")
    with generation_mode(model, tokenizer) as device:
        enc = tokenizer.pad({"input_ids": prompt_ids}, return_tensors="pt").to(device)  # left: generation_mode
        n_prompt = enc["input_ids"].shape[1]
        out = decode(model, enc, max_new_tokens, TokenSampler(temperature, top_p, seeds, n_prompt, max_new_tokens),
                     stops, pad, use_cache, eos_probability)
    answer = out.sequences[:, n_prompt:]
    stop_ids = torch.tensor(stops, device=answer.device)
    is_eos = torch.isin(answer, stop_ids)
    ended = is_eos.any(-1)
    last = answer.shape[1] - 1
    first_eos = torch.where(ended, is_eos.float().argmax(-1), torch.full_like(ended, last, dtype=torch.long))
    mask = (torch.arange(answer.shape[1], device=answer.device)[None] <= first_eos[:, None]).float()
    answer = torch.where(mask.bool(), answer, torch.full_like(answer, pad))
    texts = [tokenizer.decode(row[m.bool() & ~torch.isin(row, stop_ids)], skip_special_tokens=True).strip()
             for row, m in zip(answer, mask)]
    p_eos = None
    if eos_probability:
        p_eos = [float(out.logits[int(t)][j].float().softmax(-1)[stop_ids].sum()) if e else None
                 for j, (t, e) in enumerate(zip(first_eos.tolist(), ended.tolist()))]
    return Generation(list(conversations), torch.cat([enc["input_ids"], answer], 1),
                      torch.cat([enc["attention_mask"], mask.long()], 1), n_prompt, mask, texts, ended, p_eos, cut)


def decode(model, enc, max_new_tokens: int, sampler: TokenSampler, stops, pad: int, use_cache: bool = True,
           logits: bool = False):
    """transformers' generate loop (the KV cache, the stops) with every token drawn by `sampler`: generate itself
    only keeps the one token the sampler leaves."""
    return model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                          top_k=None, logits_processor=LogitsProcessorList([sampler]), use_cache=use_cache,
                          pad_token_id=pad, eos_token_id=stops, return_dict_in_generate=True, output_logits=logits)


class TokenSampler:
    """How llmkit draws every token, as a logits processor: at temperature 0 the most likely token (greedy); else
    transformers' temperature and top-p warpers, then one draw per row by inverse transform sampling — u ~ U[0, 1)
    and the token the first whose cumulative probability passes u. With `seeds`, row i's u come from its own
    `torch.Generator` seeded with seeds[i], made on the CPU up front (a row's draws depend on its seed and step only,
    never on the other rows, the padding or the device); without, from torch's global RNG. It returns scores that
    are −inf but at the drawn token, so greedy decoding keeps exactly that token. `draw` gives the tokens."""

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0, seeds: list[int] | None = None,
                 n_prompt: int = 0, max_new_tokens: int = 1):
        self.greedy = temperature <= 0
        self.n_prompt = n_prompt
        self.uniforms = None if seeds is None or self.greedy else torch.stack(
            [torch.rand(max_new_tokens, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        self.warpers = LogitsProcessorList()
        if not self.greedy and temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(float(temperature)))
        if not self.greedy and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(float(top_p)))

    def draw(self, input_ids: torch.Tensor, scores: torch.Tensor, generator: torch.Generator | None = None):
        """One token per row, (rows,)."""
        if self.greedy:
            return scores.argmax(-1)
        cdf = self.warpers(input_ids, scores).float().softmax(-1).cumsum(-1)
        if self.uniforms is not None:
            step = min(input_ids.shape[1] - self.n_prompt, self.uniforms.shape[1] - 1)
            u = self.uniforms[:, step]
        else:
            u = torch.rand(len(cdf), generator=generator)
        u = u[:, None].to(cdf.device) * cdf[:, -1:]
        return (cdf <= u).sum(-1).clamp(max=cdf.shape[1] - 1)  # the first token whose cdf passes u

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        token = self.draw(input_ids, scores)
        return torch.full_like(scores, float("-inf")).scatter(1, token[:, None], 0.0)


def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_prompt: int,
                      temperature: float = 1.0, with_entropy: bool = False):
    """log π(y_t | x, y_<t) of each answer token of a generated batch (`Generation`'s input_ids, attention_mask and
    n_prompt), recomputed by a forward pass at the positions generation used (left padding shifts them), with
    the logits divided by the sampling temperature; with `with_entropy`, also the entropy of π at each."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logp_all = (logits[:, n_prompt - 1:-1].float() / temperature).log_softmax(-1)
    logp = logp_all.gather(-1, input_ids[:, n_prompt:, None])[..., 0]
    if not with_entropy:
        return logp
    return logp, -(logp_all.exp() * logp_all).sum(-1)


def chat_generate(model, tokenizer, conversations: list, max_new_tokens: int = 48, batch_size: int = 64,
                  temperature: float = 0.0, top_p: float = 1.0, eos_probability: bool = False) -> list[dict]:
    """Answer each conversation, `batch_size` at a time (greedy at the default temperature 0). Per conversation:
    {"text": the answer without special tokens, "ended": it stopped at EOS, "tokens": its length without EOS,
    "eos_probability": with `eos_probability=True` the model's probability of EOS where it ended, else None}."""
    out: list[dict] = []
    for i in range(0, len(conversations), batch_size):
        g = generate(model, tokenizer, conversations[i:i + batch_size], max_new_tokens, temperature, top_p,
                     eos_probability=eos_probability)
        lengths = (g.mask.sum(-1) - g.ended.float()).long().tolist()
        for j, (text, ended) in enumerate(zip(g.texts, g.ended.tolist())):
            out.append({"text": text, "ended": ended, "tokens": lengths[j],
                        "eos_probability": g.eos_probability[j] if g.eos_probability else None})
    return out


def greedy_continuations(model, tokenizer, prompts: list[str], max_new_tokens: int = 8, batch_size: int = 64,
                         add_bos: bool = True, prefix: str = "") -> list[str]:
    """Greedy continuations of raw-text prompts (no chat template): what a base model writes next."""
    out: list[str] = []
    with generation_mode(model, tokenizer) as device:
        for i in range(0, len(prompts), batch_size):
            chunk = [((tokenizer.bos_token or "") if add_bos else "") + prefix + p for p in prompts[i:i + batch_size]]
            ids, new_tokens, _ = fit_to_context(tokenizer(chunk, add_special_tokens=False)["input_ids"],
                                                max_new_tokens, context_length(model))
            enc = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(device)
            gen = decode(model, enc, new_tokens, TokenSampler(0.0), tokenizer.eos_token_id, tokenizer.pad_token_id)
            out += tokenizer.batch_decode(gen.sequences[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def stream(model, tokenizer, input_ids: list[int], max_new_tokens: int = 48, temperature: float = 0.7,
           top_p: float = 1.0, seed: int = 0) -> Iterator[str]:
    """Yield the answer so far after every new token, for a UI that shows it as it is written: the KV cache, one
    token a step, stopping at an end-of-turn token. Tokens are drawn as everywhere else (`TokenSampler`: greedy at
    temperature 0), from a generator seeded with `seed`."""
    sampler = TokenSampler(temperature, top_p)
    draws = torch.Generator().manual_seed(int(seed))
    stops = set(end_of_turn_ids(tokenizer, getattr(model, "generation_config", None)))
    (input_ids,), max_new_tokens, _ = fit_to_context([list(input_ids)], int(max_new_tokens), context_length(model))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([input_ids], device=device)
    cache, out = None, []
    try:  # no `with torch.no_grad()` around a yield: the caller would run without gradients while it waits
        for _ in range(int(max_new_tokens)):
            with torch.no_grad():
                o = model(input_ids=ids if cache is None else ids[:, -1:], cache=cache, use_cache=True)
            cache = o.cache
            token = int(sampler.draw(ids, o.logits[:, -1].float().cpu(), draws)[0])
            if token in stops:
                break
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]], device=device)], 1)
            yield tokenizer.decode(out, skip_special_tokens=True)
    finally:
        model.train(was_training)
    if not out:
        yield ""
