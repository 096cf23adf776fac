"""Reward models at inference: what RL, the chat app and the notebooks load to score answers.

    rm = RewardModel.load("runs/demo/reward")
    rm.score(["Where was Ada born?"], ["In Elmford."])      # one float per (prompt, answer)
    explain(rm, prompt, answer)                             # where a likelihood RM's score comes from

A reward model scores a whole conversation (prompt, then answer) rendered with the chat template exactly as
TRL's RewardTrainer rendered it in training (`render`); only differences of scores mean anything. Two kinds
load from a reward stage's folder: a transformers `...ForSequenceClassification` with one output read at the
last token (the classic head), and the likelihood head (`LikelihoodRewardModel`: that head plus the gated,
floored log-probabilities the SFT model gives the answer's tokens). `llmkit.reward` trains both.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.modeling_outputs import SequenceClassifierOutput

from llmkit.chat_format import fit_roles
from llmkit.formats import as_messages
from llmkit.runs import StageError


class RewardModel:
    """A trained reward model and its tokenizer: `score(prompts, responses)` -> one float per pair."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> RewardModel:
        path = Path(path)
        if not (path / "config.json").exists():
            raise StageError(f"{path}: not a reward-model folder (no config.json); train one with llmkit reward")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        if model.config.num_labels != 1:
            raise StageError(f"{path}: a classifier with {model.config.num_labels} outputs, not a reward model (1)")
        if (path / LikelihoodRewardModel.HEAD_FILE).exists():
            model = LikelihoodRewardModel.load(path, model)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device).eval(), tokenizer)

    @torch.no_grad()
    def score(self, prompts: list, responses: list, batch_size: int = 64) -> list[float]:
        """Reward of each response (its text, or its messages) to its prompt (a user-message string or a list of
        messages), rendered with the chat template exactly as in training."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        ids = [render(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        out = [0.0] * len(ids)
        was_training = self.model.training
        self.model.eval()
        by_length = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # batches of like lengths: little padding
        for start in range(0, len(ids), batch_size):
            rows = by_length[start:start + batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in rows], device=device)
            mask = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in rows], device=device)
            for i, value in zip(rows, self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0].tolist()):
                out[i] = float(value)
        self.model.train(was_training)
        return out


class LikelihoodRewardModel(torch.nn.Module):
    """r = classifier(last token) + Σ over answer tokens of softplus(gate(h_t)) · max(log p_reference(token_t), floor).

    `classifier` is a transformers `...ForSequenceClassification` (trained), `reference` the frozen causal LM the
    log-probabilities come from (a copy of the SFT model), `header_ids` the tokens the chat template puts before
    an answer: the answer starts after the last occurrence of header_ids[0], len(header_ids) tokens on. (Prompt
    tokens would cancel in a comparison of two answers to one prompt anyway; leaving them out keeps a single
    answer's score about the answer.) TRL's RewardTrainer trains it like any reward model: it only calls
    `model(input_ids=..., attention_mask=...).logits`.

    The floor (−5: p ≈ 0.007) bounds what one token can cost. Text the SFT model would never write — a rambling
    formula, a rude aside — has log-probabilities near −15 a token, hundreds in all; unbounded, those sums set the
    scale of the first steps and the gate learned to switch itself off (measured: pairwise accuracy 0.80 on one SFT
    model, 0.97 with the floor; on another 0.95 → 0.98). A wrong fact still costs up to 5 where the right one costs
    next to nothing."""

    HEAD_FILE = "likelihood_head.json"
    GATE_FILE = "likelihood_gate.safetensors"

    def __init__(self, classifier, reference, header_ids: list[int], gate_bias: float = -2.0,
                 logp_floor: float = -5.0):
        super().__init__()
        if not hasattr(classifier, "score") or not header_ids:
            raise StageError("the likelihood head needs a classifier with a `score` layer (transformers' "
                              "...ForSequenceClassification) and a chat template; use head='last_token'")
        self.classifier, self.reference, self.header_ids = classifier, reference, list(header_ids)
        self.logp_floor = float(logp_floor)
        for p in reference.parameters():
            p.requires_grad_(False)
        reference.eval()
        self.gate = torch.nn.Linear(classifier.config.hidden_size, 1)
        torch.nn.init.zeros_(self.gate.weight)
        torch.nn.init.constant_(self.gate.bias, gate_bias)
        self.reference_cache: dict | None = None  # see reference_logprobs

    @property
    def config(self):
        return self.classifier.config

    def add_model_tags(self, tags):  # TRL tags the model it trains
        self.classifier.add_model_tags(tags)

    def train(self, mode: bool = True):
        super().train(mode)
        self.reference.eval()  # frozen: no dropout, whatever the trainer asks
        return self

    def forward(self, input_ids, attention_mask=None, **_):
        head, logp, weight, answer = self.parts(input_ids, attention_mask)
        reward = head.float() + (weight * logp * answer).sum(1)
        return SequenceClassifierOutput(logits=reward[:, None].to(head.dtype))

    def parts(self, input_ids, attention_mask=None):
        """(last-token head [rows], log p_reference of each token [rows, width-1] floored at `logp_floor`, its
        weight, answer-token mask): entry j of the last three is about the token at position j + 1."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        classifier = self.classifier.get_base_model() if hasattr(self.classifier, "peft_config") else self.classifier
        h = classifier.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows, width = input_ids.shape
        last = attention_mask.sum(1) - 1  # right padding, as TRL's collator and score() pad
        head = classifier.score(h[torch.arange(rows, device=h.device), last]).squeeze(-1)
        logp = self.reference_logprobs(input_ids, attention_mask)
        pos = torch.arange(width, device=h.device)
        starts = torch.where(input_ids == self.header_ids[0], pos, torch.full_like(pos, -1)).max(1).values
        token_pos = pos[1:][None]  # logp[:, j] is the log-probability of the token at position j + 1
        answer = (token_pos >= (starts + len(self.header_ids))[:, None]) & (token_pos <= last[:, None])
        weight = torch.nn.functional.softplus(self.gate(h[:, :-1]).squeeze(-1).float())  # read before the token
        return head, logp.clamp(min=self.logp_floor), weight, answer

    @torch.no_grad()
    def reference_logprobs(self, input_ids, attention_mask):
        """log p_reference of each next token [rows, width-1] (entry j: the token at j + 1; right padding), unfloored.

        While `reference_cache` is a dict (the reward stage sets one while it trains: the reference is frozen, so
        a pair's log-probabilities are the same in every epoch and evaluation), rows seen before are read from it
        and only the others go through the reference: at 2 epochs, half the reference passes."""
        def through_reference(ids, mask):  # a next token's logit minus the logsumexp: no full log-softmax copy
            logits = self.reference(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            return logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - logits.logsumexp(-1)

        if self.reference_cache is None:
            return through_reference(input_ids, attention_mask)
        lengths = attention_mask.sum(1).tolist()
        keys = [tuple(row[:n]) for row, n in zip(input_ids.tolist(), lengths)]
        new = [i for i, k in enumerate(keys) if k not in self.reference_cache]
        if new:
            width = max(lengths[i] for i in new)
            rows = torch.tensor(new, device=input_ids.device)
            fresh = through_reference(input_ids[rows, :width], attention_mask[rows, :width])
            for j, i in enumerate(new):
                self.reference_cache[keys[i]] = fresh[j, :lengths[i] - 1]
        out = torch.zeros(input_ids.shape[0], input_ids.shape[1] - 1, device=input_ids.device)
        for i, (key, n) in enumerate(zip(keys, lengths)):
            out[i, :n - 1] = self.reference_cache[key]
        return out

    def save_pretrained(self, folder: str | Path, **kwargs):
        folder = Path(folder)
        self.classifier.save_pretrained(folder, **kwargs)
        self.reference.save_pretrained(folder / "reference", **kwargs)
        save_file({k: v.detach().float().cpu().contiguous() for k, v in self.gate.state_dict().items()},
                  folder / self.GATE_FILE)
        (folder / self.HEAD_FILE).write_text(json.dumps({"header_ids": self.header_ids,
                                                         "logp_floor": self.logp_floor}) + "\n")

    @classmethod
    def load(cls, folder: Path, classifier) -> LikelihoodRewardModel:
        if not (folder / "reference" / "config.json").exists():
            raise StageError(f"{folder}: a likelihood reward model without its reference/ folder")
        reference = AutoModelForCausalLM.from_pretrained(folder / "reference", local_files_only=True,
                                                         dtype=torch.float32)
        head = json.loads((folder / cls.HEAD_FILE).read_text())
        model = cls(classifier, reference, head["header_ids"], logp_floor=head["logp_floor"])
        model.gate.load_state_dict(load_file(folder / cls.GATE_FILE))
        return model

    def merge_and_unload(self) -> LikelihoodRewardModel:
        self.classifier = self.classifier.merge_and_unload()
        return self


def answer_header(tokenizer) -> list[int]:
    """The tokens the chat template writes between a user turn and the assistant's answer."""
    messages = [{"role": "user", "content": "x"}]
    bare = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    with_header = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                return_dict=True)["input_ids"]
    # where the two part: a template may close a conversation with something the header replaces (Phi-3's EOS)
    n = 0
    while n < min(len(bare), len(with_header)) and bare[n] == with_header[n]:
        n += 1
    if n < len(with_header):
        return list(with_header[n:])
    # a template that writes no header (Mistral: "[INST] question [/INST]answer</s>"): the answer follows the
    # prompt's last token
    return [bare[-1]] if bare else []


def explain(rm: RewardModel, prompt, response: str) -> dict:
    """Where a likelihood reward model's score comes from: the last-token head, and per answer token its
    log-probability under the reference (the SFT model; floored as the score floors it), the learned weight and
    their product. The head plus the products is the score. A last-token reward model has only the head."""
    ids = render(rm.tokenizer, prompt, response)
    device = next(rm.model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    with torch.no_grad():
        if not isinstance(rm.model, LikelihoodRewardModel):
            head = rm.model(input_ids=input_ids).logits[0, 0].item()
            return {"head": head, "tokens": [], "score": head}
        head, logp, weight, answer = rm.model.parts(input_ids)
    tokens = [{"token": rm.tokenizer.decode([ids[j + 1]]), "logp": logp[0, j].item(), "weight": weight[0, j].item(),
               "reward": (weight[0, j] * logp[0, j]).item()} for j in range(len(ids) - 1) if answer[0, j]]
    return {"head": head[0].item(), "tokens": tokens, "score": head[0].item() + sum(t["reward"] for t in tokens)}


def render(tokenizer, prompt, response) -> list[int]:
    """Token ids of prompt + response through the chat template, as TRL's RewardTrainer tokenizes a pair. A
    response is the answer's text, or its messages (an answer that runs over several turns)."""
    answer = [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
    return list(tokenizer.apply_chat_template(as_messages(fit_roles(tokenizer, prompt)) + answer, tokenize=True,
                                              return_dict=True)["input_ids"])


def score(prompts: list, responses: list[str], model: str | Path | RewardModel) -> list[float]:
    """Score with a reward model given as a folder or a loaded RewardModel."""
    rm = model if isinstance(model, RewardModel) else RewardModel.load(model)
    return rm.score(prompts, responses)
