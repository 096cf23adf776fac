"""Reward model: a scorer of answers trained on preference pairs, on TRL's `RewardTrainer`.

The SFT model gets a scalar head (`AutoModelForSequenceClassification`, one output read at the last token of
the rendered conversation) and learns from pairs where people preferred one answer to another (Bradley–Terry):

    loss = − mean over pairs of log σ( r(prompt, chosen) − r(prompt, rejected) )

so only differences of scores mean anything. A small `center_rewards_coefficient` keeps the scores near zero.

Two heads (`RewardConfig.head`):
- "last_token": the classic one above, r = w · h_last.
- "likelihood" (default): the classic head plus what the SFT model itself knows, token by token:

      r(prompt, answer) = w · h_last  +  Σ over answer tokens t of  g_t · max(log p_SFT(token_t | before it), −5)

  where log p_SFT comes from a frozen copy of the SFT model (the *reference*) and g_t = softplus(gate(h_t)) ≥ 0
  is a weight the RM learns per position (the floor: see `LikelihoodRewardModel`). A token the SFT model finds
  surprising — a wrong birth year, a town it never saw with this person — costs reward where the gate says that
  position matters. A last-token head alone has to carry that fact check through its final hidden state, which a
  small model does badly: on the closed world it judged style pairs perfectly but right-vs-wrong facts at 0.6–0.7
  (pairwise accuracy 0.78, the likelihood head 0.97; BENCHMARKS.md).

The result is a checkpoint folder (the classifier as a plain transformers model; for the likelihood head also
`reference/` and the gate), and `RewardModel.load(folder).score(prompts, responses)` is what RL and the chat
app call.

Training data: the bundled closed-world pairs (or any file in formats.PREFERENCE_FORMATS — explicit prompt,
implicit prompt, Anthropic-HH transcripts) plus the labels people made in the annotation app
(RUN_DIR/labels.jsonl; ties and "both bad" are left out). Measured: pairwise accuracy and mean margin on the
eval split, and — on the closed world — how often the RM orders two fresh answers of the SFT model the way the
oracle does.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmkit import runs
from llmkit.curves import save_curves
from llmkit.formats import read_preferences
from llmkit.launch import gathered_model
from llmkit.loaders import DataError, bundled_path, read_jsonl, write_jsonl

STAGE = "reward"


class RewardError(ValueError):
    """Bad input to the reward stage: the message says what is wrong and what is accepted."""


@dataclass
class RewardConfig:
    base_model: str | None = None  # None: RUN_DIR/sft; else any local causal LM with a chat template
    train_data: str | None = None  # None: the bundled closed-world pairs; else a file/folder of preference pairs
    eval_data: str | None = None  # None: the bundled eval split, or 10 % of train_data
    data_format: str = "auto"  # auto, explicit, implicit, hh
    labels: str | None = None  # annotation-app labels to add; None: RUN_DIR/labels.jsonl if it exists
    max_examples: int | None = None  # train on the first N pairs only
    epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides epochs
    learning_rate: float = 1e-3  # measured: 3e-4 (2 epochs) 0.79, 1e-3 (3 epochs) 0.83, 6 epochs overfits (0.82)
    batch_size: int = 32  # pairs per optimizer step
    micro_batch_size: int | None = 8  # pairs per forward pass, on average when balance_lengths is on
    balance_lengths: bool = True  # sort each step's pairs by length into micro-batches: less padding, same loss
    max_length: int = 256  # longer pairs are dropped (TRL does not truncate them)
    warmup_ratio: float = 0.05
    center_rewards_coefficient: float | None = 0.01
    freeze_embeddings: bool = False  # full fine-tuning: keep the token embeddings fixed
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    eval_every: int = 20
    oracle_eval: bool | None = None  # None: on when training on the bundled closed-world data
    oracle_prompts: int = 100  # fresh SFT answers (two per prompt) to compare RM and oracle on
    mixed_precision: str = "auto"
    head: str = "likelihood"  # likelihood (last-token head + gated SFT log-probs of the answer) or last_token
    gate_bias: float = -2.0  # likelihood head: each token's weight starts at softplus(-2) = 0.13
    logp_floor: float = -5.0  # likelihood head: a token's log-probability counts down to here, no lower
    cache_reference: bool = True  # likelihood head: each training or eval sequence goes through the frozen
    # reference once, not once per epoch and evaluation (LikelihoodRewardModel.reference_logprobs)
    seed: int = 0

    def __post_init__(self):
        if self.head not in HEADS:
            raise RewardError(f"head={self.head!r}: accepted heads are {', '.join(HEADS)}")


HEADS = ("likelihood", "last_token")
STEP_PRESETS = {"smoke": {"max_steps": 8, "eval_every": 4, "batch_size": 16, "oracle_prompts": 16,
                          "max_examples": 256}}


def config_for(preset: str = "tiny", **overrides) -> RewardConfig:
    if preset in STEP_PRESETS:
        return RewardConfig(**{**STEP_PRESETS[preset], **overrides})
    return RewardConfig(**overrides)


# ---- the scorer ----------------------------------------------------------------------------------
class RewardModel:
    """A trained reward model and its tokenizer: `score(prompts, responses)` -> one float per pair."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> RewardModel:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").exists():
            raise RewardError(f"{path}: not a reward-model folder (no config.json); train one with llmkit reward")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        if model.config.num_labels != 1:
            raise RewardError(f"{path}: a classifier with {model.config.num_labels} outputs, not a reward model (1)")
        if (path / LikelihoodRewardModel.HEAD_FILE).exists():
            model = LikelihoodRewardModel.load(path, model)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device).eval(), tokenizer)

    @torch.no_grad()
    def score(self, prompts: list, responses: list[str], batch_size: int = 64) -> list[float]:
        """Reward of each response to its prompt (a user-message string or a list of messages), rendered with the
        chat template exactly as in training."""
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
            raise RewardError("the likelihood head needs a classifier with a `score` layer (transformers' "
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
        from transformers.modeling_outputs import SequenceClassifierOutput

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
        import json

        from safetensors.torch import save_file

        folder = Path(folder)
        self.classifier.save_pretrained(folder, **kwargs)
        self.reference.save_pretrained(folder / "reference", **kwargs)
        save_file({k: v.detach().float().cpu().contiguous() for k, v in self.gate.state_dict().items()},
                  folder / self.GATE_FILE)
        (folder / self.HEAD_FILE).write_text(json.dumps({"header_ids": self.header_ids,
                                                         "logp_floor": self.logp_floor}) + "\n")

    @classmethod
    def load(cls, folder: Path, classifier) -> LikelihoodRewardModel:
        import json

        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        if not (folder / "reference" / "config.json").exists():
            raise RewardError(f"{folder}: a likelihood reward model without its reference/ folder")
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
    if list(with_header[:len(bare)]) != list(bare):
        return []
    return list(with_header[len(bare):])


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


def render(tokenizer, prompt, response: str) -> list[int]:
    """Token ids of prompt + response through the chat template, as TRL's RewardTrainer tokenizes a pair."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return list(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}],
                                              tokenize=True, return_dict=True)["input_ids"])


def score(prompts: list, responses: list[str], model: str | Path | RewardModel) -> list[float]:
    """Score with a reward model given as a folder or a loaded RewardModel."""
    rm = model if isinstance(model, RewardModel) else RewardModel.load(model)
    return rm.score(prompts, responses)


# ---- the stage -----------------------------------------------------------------------------------
def run(config: RewardConfig, run_dir: str | Path, overwrite: bool = False, progress: bool = True,
        callbacks: tuple = ()) -> runs.StageResult:
    """Train the reward model and write RUN_DIR/reward. `callbacks`: objects with `on_log(record)`."""
    from llmkit.sft import SFTError, load_chat_tokenizer

    run_dir = Path(run_dir)
    base = Path(config.base_model) if config.base_model else run_dir / "sft"
    done = runs.stage_dir(run_dir, STAGE)
    if runs.finished(done) and not overwrite:
        return runs.StageResult(STAGE, done, runs.read_metrics(done), reused=True)
    if not (base / "config.json").exists():
        raise RewardError(f"{base}: not a local transformers model folder (no config.json); run SFT first "
                          f"(llmkit sft --run-dir {run_dir}) or pass base_model / --rm-base-model")
    try:
        tokenizer = load_chat_tokenizer(base, run_dir)  # the reward model itself is loaded once, by the trainer
    except SFTError as e:
        raise RewardError(str(e)) from None
    train_rows, eval_rows, n_labels = load_pairs(config, run_dir)
    final, work = runs.reuse_or_start(run_dir, STAGE, overwrite)
    if work is None:
        return runs.StageResult(STAGE, final, runs.read_metrics(final), reused=True)
    try:
        return _train(config, base, tokenizer, train_rows, eval_rows, n_labels, final, work, progress, callbacks)
    except BaseException:
        runs.abandon(work)
        raise


def load_pairs(config: RewardConfig, run_dir: Path) -> tuple[list[dict], list[dict], int]:
    """(train, eval, how many train pairs came from the annotation app's labels)."""
    from llmkit.labels import export_pairs

    if config.train_data is None:
        train = read_preferences(bundled_path("preferences_train.jsonl"), "explicit")
        evals = (read_preferences(config.eval_data, config.data_format) if config.eval_data
                 else read_preferences(bundled_path("preferences_eval.jsonl"), "explicit"))
    else:
        train = read_preferences(config.train_data, config.data_format)
        if config.eval_data:
            evals = read_preferences(config.eval_data, config.data_format)
        else:
            n_eval = max(1, len(train) // 10) if len(train) > 1 else 0
            train, evals = train[n_eval:], train[:n_eval] or train[:1]
    if config.max_examples is not None:
        if config.max_examples < 1:
            raise DataError(f"max_examples={config.max_examples}: give a positive number of pairs")
        train = train[: config.max_examples]
    labels = Path(config.labels) if config.labels else run_dir / "labels.jsonl"
    from_labels: list[dict] = []
    if config.labels and not labels.exists():
        raise DataError(f"{labels}: no such labels file (labels / --labels)")
    if labels.exists():
        from_labels, _ = export_pairs(labels)
    return train + from_labels, evals, len(from_labels)


def build_trainer(config: RewardConfig, tokenizer, base: Path, train_rows: list[dict], eval_rows: list[dict],
                  work: Path, progress: bool = False, callbacks: tuple = ()):
    """TRL's RewardTrainer on a sequence-classification copy of the base model (LoRA if asked)."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as transformers_logging
    from trl import RewardConfig as TRLConfig

    from llmkit.sft import _bf16, sampling_strategy

    cuda = torch.cuda.is_available()
    micro, accumulation = runs.split_batch(config.batch_size, config.micro_batch_size, runs.world_size(), RewardError)
    torch.manual_seed(config.seed)  # the new score head
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the new head is "missing from the checkpoint": that is the point
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, local_files_only=True,
                                                                   dtype=torch.float32)
    finally:
        transformers_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules="all-linear", task_type="SEQ_CLS", modules_to_save=["score"])
    if config.freeze_embeddings and not config.lora:
        for p in model.get_input_embeddings().parameters():
            p.requires_grad_(False)
    if config.head == "likelihood":
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM

        if peft_config is not None:  # peft wraps the classifier; TRL would try to wrap the whole reward model
            model, peft_config = get_peft_model(model, peft_config), None
        reference = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32)
        model = LikelihoodRewardModel(model, reference, answer_header(tokenizer), config.gate_bias, config.logp_floor)
    args = TRLConfig(
        output_dir=str(work / "trainer"), per_device_train_batch_size=micro, per_device_eval_batch_size=micro,
        gradient_accumulation_steps=accumulation, num_train_epochs=config.epochs,
        train_sampling_strategy=sampling_strategy(config.balance_lengths, accumulation),
        max_steps=config.max_steps, learning_rate=config.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio, max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient, eval_strategy="steps",
        eval_steps=config.eval_every, logging_steps=max(1, config.eval_every // 4), save_strategy="no", report_to=[],
        seed=config.seed, data_seed=config.seed, use_cpu=not cuda, bf16=_bf16(config),
        fp16=config.mixed_precision == "fp16", gradient_checkpointing=False, disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    trainer = pair_mean_reward_trainer()(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                                         eval_dataset=Dataset.from_list(eval_rows), processing_class=tokenizer,
                                         peft_config=peft_config, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)
    return trainer


@functools.cache
def pair_mean_reward_trainer() -> type:
    """The trainer class (built on first use: importing TRL takes seconds)."""
    from trl import RewardTrainer

    from llmkit.sft import length_balanced

    class PairMeanRewardTrainer(length_balanced(RewardTrainer)):
        """TRL's RewardTrainer, with the loss of an optimizer step the mean over all its pairs however they are
        split into micro-batches.

        Length-balanced batches (`llmkit.sft.sampling_strategy`) put many short pairs in one micro-batch and few
        long ones in another (on the closed world 2.4 padded tokens per real one at 32 pairs a pass, 1.5
        balanced over 4 passes). TRL averages each micro-batch and the Trainer divides by the number of
        passes, which would weigh a pair in a small micro-batch more; scaling each micro-batch's mean by its
        share of the pairs makes the sum exactly the step's mean."""

        def _prepare_dataset(self, dataset, *args, **kwargs):  # the length the sampler sorts by
            dataset = super()._prepare_dataset(dataset, *args, **kwargs)
            return dataset.map(lambda r: {"length": max(len(r["chosen_ids"]), len(r["rejected_ids"]))})

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, "length"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
            if model.training:
                loss = loss * (inputs["input_ids"].shape[0] // 2) / self.args.per_device_train_batch_size
            return (loss, outputs) if return_outputs else loss

    return PairMeanRewardTrainer


def _train(config, base, tokenizer, train_rows, eval_rows, n_labels, final, work, progress, callbacks):
    from llmkit.sft import _LogBridge, _parameter_counts

    log = _LogBridge(work / "log.jsonl", callbacks, extra=(("accuracy", "accuracy"), ("eval_accuracy", "val_accuracy"),
                                                           ("margin", "margin"), ("eval_margin", "val_margin")))
    trainer = build_trainer(config, tokenizer, base, train_rows, eval_rows, work, progress, [log.trainer_callback()])
    kept = len(trainer.train_dataset)
    trainable, total = _parameter_counts(trainer.model)
    if isinstance(trainer.model, LikelihoodRewardModel):
        from accelerate.utils import DistributedType

        if trainer.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise RewardError("the likelihood head is not supported under FSDP or DeepSpeed yet: use DDP "
                              "(configs/accelerate/multi_gpu.yaml) or head='last_token'")
        total -= sum(p.numel() for p in trainer.model.reference.parameters())  # the frozen copy is not the RM's
        trainer.model.reference_cache = {} if config.cache_reference else None
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        if isinstance(trainer.model, LikelihoodRewardModel):
            trainer.model.reference_cache = None  # what scores after training meet is new: nothing to reuse
    train_seconds = time.perf_counter() - start
    model = gathered_model(trainer)
    if model is None:  # under several processes the main one saves and evaluates
        return runs.StageResult(final.name, final, {})
    if config.lora:
        model = model.merge_and_unload()
    model = model.float().eval()
    model.save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)

    rm = RewardModel(model, tokenizer)
    pairs = pairwise(rm, eval_rows)
    write_jsonl(work / "eval_scores.jsonl", pairs["rows"])
    metrics = {
        "base_model": str(base), "train_pairs": len(train_rows), "train_pairs_used": kept,
        "train_pairs_from_labels": n_labels, "eval_pairs": len(eval_rows), "steps": trainer.state.global_step,
        "train_seconds": train_seconds, "trainable_params": trainable, "total_params": total,
        "eval_accuracy": pairs["accuracy"], "eval_margin": pairs["margin"], "method": "lora" if config.lora else "full",
        "head": config.head,
    }
    closed_world = config.oracle_eval if config.oracle_eval is not None else config.train_data is None
    if closed_world:
        agreement = oracle_agreement(rm, base, n_prompts=config.oracle_prompts, seed=config.seed)
        write_jsonl(work / "oracle_pairs.jsonl", agreement.pop("rows"))
        metrics.update(agreement)
    save_curves(work)
    return runs.commit(work, final, config, metrics)


# ---- measurements --------------------------------------------------------------------------------
def pairwise(rm: RewardModel, rows: list[dict]) -> dict:
    """Accuracy (chosen scored above rejected) and mean margin over preference rows, with every pair's scores."""
    prompts = [r["prompt"] for r in rows]
    chosen = rm.score(prompts, [r["chosen"][-1]["content"] for r in rows])
    rejected = rm.score(prompts, [r["rejected"][-1]["content"] for r in rows])
    out = [{"prompt": _prompt_text(r["prompt"]), "chosen": r["chosen"][-1]["content"],
            "rejected": r["rejected"][-1]["content"], "score_chosen": c, "score_rejected": j}
           for r, c, j in zip(rows, chosen, rejected)]
    n = max(1, len(rows))
    return {"accuracy": sum(c > j for c, j in zip(chosen, rejected)) / n,
            "margin": sum(c - j for c, j in zip(chosen, rejected)) / n, "rows": out}


def oracle_agreement(rm: RewardModel, policy_dir: str | Path, n_prompts: int = 100, temperature: float = 1.0,
                     seed: int = 0) -> dict:
    """Sample two answers per held-out RL prompt from the policy (the SFT model); where the oracle prefers one,
    how often does the RM prefer the same one? Also the correlation of RM and oracle scores."""
    from transformers import AutoModelForCausalLM

    from llmkit.evaluate import chat_generate
    from llmkit.oracle import Oracle

    prompts = [r["prompt"] for r in read_jsonl(bundled_path("rl_prompts_eval.jsonl"))[:n_prompts]]
    policy = AutoModelForCausalLM.from_pretrained(policy_dir, local_files_only=True, dtype=torch.float32)
    torch.manual_seed(seed)
    a = chat_generate(policy, rm.tokenizer, prompts, do_sample=True, temperature=temperature)
    b = chat_generate(policy, rm.tokenizer, prompts, do_sample=True, temperature=temperature)
    oracle = Oracle()
    rows, agree, decided = [], 0, 0
    rm_a, rm_b = rm.score(prompts, [x["text"] for x in a]), rm.score(prompts, [x["text"] for x in b])
    for p, x, y, ra, rb in zip(prompts, a, b, rm_a, rm_b):
        oa, ob = oracle.score(p, x["text"]), oracle.score(p, y["text"])
        if oa != ob and ra != rb:
            decided += 1
            agree += (oa > ob) == (ra > rb)
        rows.append({"prompt": _prompt_text(p), "answer_a": x["text"], "answer_b": y["text"], "oracle_a": oa,
                     "oracle_b": ob, "rm_a": ra, "rm_b": rb})
    rm_all = rm_a + rm_b
    or_all = [r["oracle_a"] for r in rows] + [r["oracle_b"] for r in rows]
    return {"oracle_agreement": agree / decided if decided else float("nan"), "oracle_decided_pairs": decided,
            "oracle_rm_correlation": _pearson(rm_all, or_all), "rows": rows}


def _pearson(x: list[float], y: list[float]) -> float:
    t = torch.tensor([x, y], dtype=torch.float64)
    if len(x) < 2 or (t.std(dim=1) == 0).any():
        return float("nan")
    return float(torch.corrcoef(t)[0, 1])


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in prompt if m["role"] == "user") if len(prompt) > 1 else prompt[-1]["content"]

