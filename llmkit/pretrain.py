"""Pretraining: next-token prediction on the packed blocks of the data stage (or on your own text).

    loss = − mean over tokens of log p(token_t | tokens_<t)
    bits per byte = loss · (tokens / bytes) / ln 2

The loop is the classic one (nanoGPT's), run through accelerate so that the same code uses a CPU, one GPU
or many: AdamW (β = 0.9, 0.95; weight decay on the transformer's matrices, not on norms or embeddings: 1.0
on the tiny preset, 0.1 on the others) — or, with `optimizer="muon"`, Muon for those matrices (`llmkit.muon`:
the tiny preset then stores its facts in 400 steps instead of 1100), linear warmup then cosine decay to
`min_lr_ratio` of the peak, gradient clipping, gradient accumulation so that the global batch stays the
same whatever the number of devices, bf16 autocast and optional `torch.compile` on GPU.

Every `eval_every` steps it measures validation loss and **bits per byte** (a tokenizer-independent unit:
runs with different tokenizers compare), throughput and **MFU** (model FLOPs utilisation: achieved
training FLOPs per second over the hardware's peak — measured here for a CPU, nominal for known GPUs).

Checkpoints (`accelerate.save_state`: weights, optimizer, scheduler, RNG states) plus the step go to
`.pretrain.partial/checkpoints/`; the order of the training data is a pure function of (seed, step), so a
resumed run sees exactly the batches an uninterrupted one would have. The finished model is a plain
`save_pretrained` folder with its tokenizer in `runs/<name>/pretrain/`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import Dataset, load_from_disk
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from llmkit import lifecycle, runs
from llmkit import world as W
from llmkit.generation import greedy_continuations
from llmkit.loaders import Rejects, bundled_path, load_documents, read_jsonl
from llmkit.model import (
    MODEL_SIZES,
    build_model,
    flops_per_token,
    load_causal_lm,
    parameter_count,
    parameter_counts,
)
from llmkit.muon import Muon
from llmkit.options.pretrain import PRESETS, PretrainConfig, config_for
from llmkit.runs import StageError
from llmkit.tokenizer import load_tokenizer, pack_sequences, tokenizer_fingerprint, train_tokenizer
from llmkit.training import precision


@dataclass
class PretrainInputs:
    accelerator: Accelerator
    tokenizer: object
    model: torch.nn.Module
    blocks: torch.Tensor  # training rows (rows, block length)
    val: torch.Tensor
    bytes_per_token: float
    preset: object  # the model size (llmkit.model.ModelSize) with the config's depth


def read_inputs(config: PretrainConfig, run_dir: Path, rejects: Rejects) -> PretrainInputs:
    """The model (new, or the base model to continue) and its tokenizer, and the training and validation rows,
    checked against each other."""
    preset = model_preset(config)
    runs.world_size()  # join a launcher's process group first: an Accelerator made before it on CPUs runs alone
    # The schedule counts optimizer steps, which are the same on any number of processes (accelerate's default
    # would step it once per process per step, running the warmup and decay N times too fast).
    accelerator = Accelerator(mixed_precision=precision(config.mixed_precision), step_scheduler_with_optimizer=False)
    set_seed(config.seed)
    tokenizer, model = _model_and_tokenizer(config, run_dir, preset.depth, rejects)
    blocks, val, bytes_per_token = load_training_data(config, run_dir, tokenizer, preset.seq_len, rejects)
    check_vocabulary(blocks, model)
    return PretrainInputs(accelerator, tokenizer, model, blocks, val, bytes_per_token, preset)


def train(config: PretrainConfig, inputs: PretrainInputs, work: lifecycle.Work) -> dict:
    accelerator, tokenizer, model, blocks, preset = (inputs.accelerator, inputs.tokenizer, inputs.model,
                                                     inputs.blocks, inputs.preset)
    optimizer_name = config.optimizer or preset.optimizer
    seq_len = config.seq_len or preset.seq_len
    train_rows = PackedEpochs(split_documents(blocks, tokenizer.bos_token_id), seq_len, config.seed)
    val = inputs.val.flatten()[: len(inputs.val.flatten()) // seq_len * seq_len].view(-1, seq_len)
    if config.compile:
        model = torch.compile(model)

    world_size = accelerator.num_processes
    batch = config.batch_size or preset.batch_size
    micro, accumulation = runs.split_batch(batch, config.micro_batch_size or preset.micro_batch_size, world_size)
    lr = config.learning_rate or preset.learning_rate

    # Weight decay on the transformer's matrices only: not on norms, and not on the token embeddings (tied to
    # the output layer), where it shrinks every token's vector and flattens the output distribution — sampled
    # answers then run on past the end of turn (measured: 23 % instead of 100 % ending with EOS at T = 0.7).
    embeddings = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    decay = [p for p in model.parameters() if p.dim() >= 2 and id(p) not in embeddings]
    no_decay = [p for p in model.parameters() if p.dim() < 2 or id(p) in embeddings]
    weight_decay = config.weight_decay if config.weight_decay is not None else preset.weight_decay
    optimizers = _optimizers(optimizer_name, decay, no_decay, lr, weight_decay,
                             fused=accelerator.device.type == "cuda")
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: lr_factor(s, config)) for o in optimizers]
    model, *prepared = accelerator.prepare(model, *optimizers, *schedulers)
    optimizers, schedulers = prepared[:len(optimizers)], prepared[len(optimizers):]

    checkpoints = work.dir / "checkpoints"
    start_step, elapsed, watch = resume_from(checkpoints, accelerator)
    log = work.log
    log.keep_until(start_step)  # forget what came after the checkpoint
    runs.keep_log_until(work.dir / "ranks" / f"rank{accelerator.process_index}.jsonl", start_step)

    n_flops = flops_per_token(accelerator.unwrap_model(model), seq_len)
    peak = peak_flops(accelerator.device) * world_size  # tokens/s counts every process's tokens
    prompts = config.sample_prompts or _default_prompts(work.closed_world, tokenizer, val)

    bar = _progress(work.progress, config.max_steps, start_step)
    model.train()
    tokens_seen = start_step * batch * seq_len
    window_start, window_tokens = time.perf_counter(), 0
    for step in range(start_step, config.max_steps):
        mine = train_rows.rows(step, batch)[accelerator.process_index::world_size]
        step_loss = torch.zeros((), device=accelerator.device)
        for k in range(accumulation):
            x = mine[k * micro:(k + 1) * micro].to(accelerator.device)
            with accelerator.autocast():
                loss = model(input_ids=x, labels=x).loss / accumulation
            accelerator.backward(loss)
            step_loss += loss.detach()
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        for optimizer, scheduler in zip(optimizers, schedulers):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        tokens_seen += batch * seq_len
        window_tokens += batch * seq_len
        done = step + 1
        bar.update(1)

        if done % config.eval_every == 0 or done == config.max_steps or done == 1:
            if world_size > 1:  # each process's own share of the batch, beside the averaged log.jsonl
                rank_log(work.dir, accelerator.process_index, {"step": done, "loss": step_loss.item(),
                                                               "rows": len(mine), "tokens": mine.numel()})
            train_loss = accelerator.reduce(step_loss, "mean").item()
            seconds = time.perf_counter() - window_start
            elapsed += seconds
            tps = window_tokens / seconds
            record = {"step": done, "tokens": tokens_seen, "loss": train_loss,  # loss: this step's batch
                      "lr": schedulers[-1].get_last_lr()[0],
                      "grad_norm": float(grad_norm), "tokens_per_s": tps, "mfu": tps * n_flops / peak,
                      "elapsed_s": elapsed}
            val_loss = evaluate_loss(model, val, micro, accelerator, config.eval_limit)
            record.update(val_loss=val_loss, val_bpb=val_loss / (math.log(2) * inputs.bytes_per_token))
            log.write(record)
            bar.set_postfix(loss=f"{train_loss:.3f}", val_bpb=f"{record['val_bpb']:.3f}", tok_s=f"{tps:.0f}")
            if watch.update(done, val_loss) and config.early_stopping and accelerator.is_main_process:
                save_model(accelerator.unwrap_model(model), str(work.dir / BEST))  # the weights to fall back on
            window_start, window_tokens = time.perf_counter(), 0
        stop = bool(config.early_stopping) and watch.worse >= config.early_stopping
        if done % config.save_every == 0 or done == config.max_steps or stop:
            saving = time.perf_counter()
            save_checkpoint(checkpoints, done, elapsed, accelerator, watch)
            window_start += time.perf_counter() - saving  # saving is not training time
        if stop:  # the validation loss rose `early_stopping` evaluations in a row: the model memorises
            break
    bar.close()

    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return {}
    model = accelerator.unwrap_model(model)
    model.eval()
    fell_back = watch.worse > 0 and (work.dir / BEST).exists()
    if fell_back:
        load_model(model, str(work.dir / BEST))
    metrics = _final_metrics(work.dir / "log.jsonl", model, seq_len, n_flops, peak)
    metrics.update(learning_rate=lr, weight_decay=weight_decay, batch_size=batch, optimizer=optimizer_name)
    metrics.update(data_guardrails(metrics, watch, blocks.numel(), inputs.bytes_per_token, fell_back, preset,
                                   len(tokenizer)))
    samples = [{"prompt": p, "continuation": c}
               for p, c in zip(prompts, greedy_continuations(model, tokenizer, prompts, max_new_tokens=24))]
    log.write({"step": metrics["steps"], "samples": samples})
    metrics["samples"] = samples
    getattr(model, "_orig_mod", model).save_pretrained(work.dir, safe_serialization=True)
    tokenizer.save_pretrained(work.dir)
    (work.dir / BEST).unlink(missing_ok=True)
    if not config.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return metrics


def _optimizers(name: str, matrices: list, others: list, lr: float, weight_decay: float, fused: bool) -> list:
    """AdamW for everything, or Muon (orthogonalised momentum, Jordan et al. 2024) for the transformer's matrices
    beside AdamW for the embeddings and norms. Muon's step is scaled to AdamW's RMS ("match_rms_adamw"), so
    the same peak learning rate and schedule serve both."""
    if name == "adamw":
        return [torch.optim.AdamW([{"params": matrices, "weight_decay": weight_decay},
                                   {"params": others, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95), fused=fused)]
    return [Muon(matrices, lr=lr, weight_decay=weight_decay),
            torch.optim.AdamW(others, lr=lr, betas=(0.9, 0.95), weight_decay=0.0, fused=fused)]


def rank_log(work: Path, rank: int, record: dict) -> None:
    """Append to work/ranks/rank<N>.jsonl: what one process of a multi-process run saw."""
    folder = work / "ranks"
    folder.mkdir(exist_ok=True)
    with open(folder / f"rank{rank}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


# ---- watching the validation loss, and what the data can support -----------------------------------
BEST = "best.safetensors"  # the weights of the best validation loss so far, in the work folder while training


@dataclass
class ValidationWatch:
    """The best validation loss so far and its step, and how many evaluations in a row have been worse since."""

    best: float = math.inf
    best_step: int = 0
    worse: int = 0

    def update(self, step: int, loss: float) -> bool:
        """Take one evaluation; True when it is the best so far."""
        if loss < self.best:
            self.best, self.best_step, self.worse = loss, step, 0
            return True
        self.worse += 1
        return False


def data_guardrails(metrics: dict, watch: ValidationWatch, train_tokens: int, bytes_per_token: float,
                    fell_back: bool, preset, vocab_size: int) -> dict:
    """Tokens per parameter and epochs over the data, the best validation step, and warnings: when the validation
    loss rose (the model memorised its data; the best step's weights are the ones kept) and when the data is far
    too small for the model (with the depth that would suit it)."""
    params = metrics["parameters"]["total"]
    epochs = metrics["tokens"] / max(train_tokens, 1)
    out = {"train_tokens": train_tokens, "epochs": epochs, "tokens_per_parameter": metrics["tokens"] / params,
           "best_step": watch.best_step, "warnings": []}
    if fell_back:
        out.update(final_val_loss=metrics["val_loss"], final_val_bpb=metrics["val_bpb"], val_loss=watch.best,
                   val_bpb=watch.best / (math.log(2) * bytes_per_token))
        out["warnings"].append(
            f"the validation loss rose after step {watch.best_step} ({watch.best:.3f} there, "
            f"{metrics['val_loss']:.3f} at step {metrics['steps']}): the model memorised its training data from "
            f"there on; the weights kept are step {watch.best_step}'s")
    if epochs > 30 or fell_back:
        fits = [d for d in range(preset.depth - 1, 0, -1) if parameter_count(d, vocab_size) <= train_tokens]
        advice = (f"depth {fits[0]} ({parameter_count(fits[0], vocab_size) / 1e6:.2f} M parameters) would suit it"
                  if fits else f"even depth 1 has {parameter_count(1, vocab_size) / 1e6:.2f} M parameters: it "
                  "needs more text")
        out["warnings"].append(
            f"the training data is small for this model: {train_tokens:,} tokens for {params / 1e6:.2f} M parameters, "
            f"each token seen {epochs:.0f} times; {advice}")
    return out


# ---- the schedule and the data order --------------------------------------------------------------
def lr_factor(step: int, config: PretrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to `min_lr_ratio` of it at `max_steps`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class PackedEpochs:
    """Training rows for every step: the documents (each starting with BOS) are shuffled and re-packed into
    rows of `seq_len` tokens at every epoch.

    Re-packing matters when a small corpus is seen many times: with fixed blocks a model can memorise each
    block from its first tokens instead of learning what the text says; with new neighbours and new cut
    points every epoch it cannot. The rows of a step are a pure function of (seed, step), which is what
    makes resuming exact."""

    def __init__(self, docs: list[torch.Tensor], seq_len: int, seed: int):
        self.docs, self.seq_len, self.seed = docs, seq_len, seed
        self.rows_per_epoch = sum(len(d) for d in docs) // seq_len
        if self.rows_per_epoch == 0:
            raise StageError(f"the training data holds fewer than seq_len={seq_len} tokens")
        self._cache: tuple[int, torch.Tensor] | None = None

    def epoch(self, e: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != e:
            order = torch.randperm(len(self.docs), generator=torch.Generator().manual_seed(self.seed * 100_003 + e))
            stream = torch.cat([self.docs[i] for i in order.tolist()])
            self._cache = (e, stream[: self.rows_per_epoch * self.seq_len].view(-1, self.seq_len))
        return self._cache[1]

    def rows(self, step: int, batch: int) -> torch.Tensor:
        out = []
        for i in range(step * batch, (step + 1) * batch):
            e, r = divmod(i, self.rows_per_epoch)
            out.append(self.epoch(e)[r])
        return torch.stack(out)


def split_documents(blocks: torch.Tensor, bos_id: int) -> list[torch.Tensor]:
    """Cut packed blocks back into documents at their BOS tokens."""
    stream = blocks.flatten()
    starts = (stream == bos_id).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    return [stream[a:b] for a, b in zip(starts, [*starts[1:], len(stream)]) if b > a]


# ---- data -----------------------------------------------------------------------------------------
def load_training_data(config: PretrainConfig, run_dir: Path, tokenizer, default_seq_len: int,
                       rejects: Rejects | None = None):
    """(train, validation) packed blocks as int64 tensors (rows, block length), and bytes per token."""
    data_stage = run_dir / "data"
    source = Path(config.train_data) if config.train_data else None
    if source is None and config.base_model:
        source = data_stage / "documents.jsonl"  # the data stage's clean text, tokenized for this model
    if source is None or _is_blocks(source):
        blocks_dir = source or data_stage / "blocks"
        if not blocks_dir.exists():
            raise StageError(
                f"{blocks_dir} does not exist: run the data stage first (llmkit data --run-dir {run_dir}) "
                "or pass train_data / --train-data with a blocks folder or text files"
            )
        _check_tokenizer_matches(blocks_dir, tokenizer)
        blocks = load_from_disk(str(blocks_dir))
        train = torch.tensor(blocks["train"]["input_ids"][: config.max_examples], dtype=torch.long)
        val = torch.tensor(blocks["validation"]["input_ids"], dtype=torch.long)
        metrics_file = blocks_dir.parent / "metrics.json"
        bpt = json.loads(metrics_file.read_text())["validation_bytes_per_token"] if metrics_file.exists() else None
        return train, val, bpt or _bytes_per_token(tokenizer, val)

    docs, _ = load_documents(source, config.text_field, config.max_examples, rejects=rejects)
    if not docs:
        raise StageError(f"{source}: no documents to train on")
    seq_len = config.seq_len or default_seq_len
    n_val = max(1, len(docs) // 20) if len(docs) > 1 else 0
    texts = [d["text"] for d in docs]
    if len(docs) == 1:  # one long text (a book): hold out its last 5 % as validation
        cut = int(len(texts[0]) * 0.95)
        texts, val_texts = [texts[0][:cut]], [texts[0][cut:]]
    else:
        texts, val_texts = texts[n_val:], texts[:n_val]
    packed_train, s_train = pack_sequences(Dataset.from_dict({"text": texts}), tokenizer, seq_len)
    packed_val, s_val = pack_sequences(Dataset.from_dict({"text": val_texts}), tokenizer, seq_len)
    if len(packed_train) == 0 or len(packed_val) == 0:
        raise StageError(f"{source}: too little text for one training and one validation block of {seq_len} tokens")
    train = torch.tensor(packed_train["input_ids"], dtype=torch.long)
    val = torch.tensor(packed_val["input_ids"], dtype=torch.long)
    return train, val, s_val["bytes_per_token"]


def _is_blocks(path: Path) -> bool:
    return path.is_dir() and (path / "dataset_dict.json").exists()


def _check_tokenizer_matches(blocks_dir: Path, tokenizer) -> None:
    stamp = blocks_dir / "tokenizer_fingerprint.txt"
    if stamp.exists() and stamp.read_text().strip() != tokenizer_fingerprint(tokenizer):
        raise StageError(
            f"{blocks_dir} was tokenized with a different tokenizer than the model's ({stamp.read_text().strip()} "
            f"vs {tokenizer_fingerprint(tokenizer)}): token ids would mean different things. Train on text "
            "instead (train_data= a text/jsonl path, or the data stage's documents.jsonl) so it is tokenized for this "
            "model"
        )


def check_vocabulary(train: torch.Tensor, model) -> None:
    vocab = model.get_input_embeddings().num_embeddings
    top = int(train.max())
    if top >= vocab:
        raise StageError(
            f"the training data holds token id {top} but the model's vocabulary has {vocab} entries: the blocks "
            "were made with a different tokenizer; retokenize the text with the model's tokenizer"
        )


def _bytes_per_token(tokenizer, blocks: torch.Tensor) -> float:
    text = tokenizer.decode(blocks.flatten().tolist(), skip_special_tokens=True)
    return len(text.encode("utf-8")) / blocks.numel()


# ---- model ----------------------------------------------------------------------------------------
def model_preset(config: PretrainConfig):
    """The model size (llmkit.model.MODEL_SIZES) the config names, with its depth overridden if the config says so."""
    preset = MODEL_SIZES[config.model_size]
    if config.depth:
        preset = dataclasses.replace(preset, depth=config.depth)
    return preset


def _model_and_tokenizer(config: PretrainConfig, run_dir: Path, depth: int, rejects: Rejects | None = None):
    if config.base_model:
        path = runs.model_folder(config.base_model, None, "base model", "give base_model a local transformers "
                                                                         "causal-LM folder")
        return AutoTokenizer.from_pretrained(path, local_files_only=True), load_causal_lm(path)
    tok_dir = run_dir / "data" / "tokenizer"
    if tok_dir.exists():
        tokenizer = load_tokenizer(tok_dir)
    elif config.train_data and not _is_blocks(Path(config.train_data)):
        tokenizer = _tokenizer_for_text(config, rejects)  # plain text and no data stage: a BPE trained on the text
    else:
        raise StageError(f"{tok_dir} does not exist: run the data stage first, or give train_data= text files or "
                         "base_model")
    return tokenizer, build_model(depth, tokenizer, seed=config.seed)


def _tokenizer_for_text(config: PretrainConfig, rejects: Rejects | None = None):
    docs, _ = load_documents(config.train_data, config.text_field, config.max_examples,
                             rejects=Rejects(rejects.max_fraction) if rejects else None)
    return train_tokenizer((d["text"] for d in docs), vocab_size=4096)


# ---- evaluation, sampling, checkpoints -----------------------------------------------------------
def evaluate_loss(model, val: torch.Tensor, micro: int, accelerator, max_sequences: int) -> float:
    """Mean validation loss (nats per token) over the first `max_sequences` validation rows (None: all)."""
    model.eval()
    rows = val[:max_sequences]
    mine = rows[accelerator.process_index::accelerator.num_processes]
    total = torch.zeros((), device=accelerator.device)
    count = torch.zeros((), device=accelerator.device)
    for i in range(0, len(mine), micro):
        x = mine[i:i + micro].to(accelerator.device)
        with torch.no_grad(), accelerator.autocast():
            loss = model(input_ids=x, labels=x).loss
        total += loss.float() * len(x)
        count += len(x)
    model.train()
    return (accelerator.reduce(total, "sum") / accelerator.reduce(count, "sum").clamp(min=1)).item()


def save_checkpoint(checkpoints: Path, step: int, elapsed: float, accelerator, watch: ValidationWatch) -> None:
    """accelerate's full state plus the step, written to a temporary folder and renamed into place, so a
    crash while saving never leaves a half-written checkpoint where resume would look."""
    target = checkpoints / f"step-{step:07d}"
    tmp = checkpoints / f".step-{step:07d}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    # The output layer is the token embedding (tied): accelerate says at every save that it stored it once.
    shared_tensor_warning = logging.getLogger("accelerate.utils.other")
    level = shared_tensor_warning.level
    shared_tensor_warning.setLevel(logging.ERROR)
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
    finally:
        shared_tensor_warning.setLevel(level)
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "elapsed_s": elapsed,
                                                            "watch": dataclasses.asdict(watch)}))
        os.replace(tmp, target) if not target.exists() else (shutil.rmtree(target), os.replace(tmp, target))
        for old in sorted(checkpoints.glob("step-*"))[:-1]:  # keep the newest only
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resume_from(checkpoints: Path, accelerator) -> tuple[int, float, ValidationWatch]:
    """(step, elapsed seconds, the validation watch) of the newest checkpoint, loaded into the prepared objects;
    a fresh start if there is none."""
    found = sorted(checkpoints.glob("step-*")) if checkpoints.exists() else []
    if not found:
        return 0, 0.0, ValidationWatch()
    latest = found[-1]
    try:
        state = json.loads((latest / "trainer_state.json").read_text())
        accelerator.load_state(str(latest))
    except Exception as e:  # a truncated or foreign file: say which checkpoint, keep everything on disk
        raise StageError(
            f"cannot resume from {latest}: {type(e).__name__}: {e}. The checkpoint is unreadable; nothing was "
            "changed. Delete that folder to resume from an earlier one, or pass overwrite=True (--overwrite) "
            "to start again"
        ) from e
    return int(state["step"]), float(state.get("elapsed_s", 0.0)), ValidationWatch(**state.get("watch", {}))


def _default_prompts(closed_world: bool, tokenizer, val: torch.Tensor) -> list[str]:
    if closed_world:
        world = W.World.load(bundled_path("world.json"))
        p, u = world.people[0], world.universities[0]
        return [f"{p.name} was born in", f"{u.name} is a university in", "The river"]
    return [tokenizer.decode(row[1:9].tolist(), skip_special_tokens=True) for row in val[:3]]


_PEAK_CACHE: dict[str, float] = {}
NOMINAL_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "T4": 65e12,
                      "4090": 165e12, "3090": 71e12}  # dense bf16 tensor-core peaks from vendor data sheets


def peak_flops(device: torch.device) -> float:
    """Peak FLOP/s for MFU: a GPU's nominal bf16 peak when known, else a measured fp32 matmul peak."""
    key = str(device)
    if key not in _PEAK_CACHE:
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            nominal = next((v for k, v in NOMINAL_PEAK_FLOPS.items() if k in name), None)
            _PEAK_CACHE[key] = nominal or measure_matmul_flops(device, torch.bfloat16)
        else:
            _PEAK_CACHE[key] = measure_matmul_flops(device, torch.float32)
    return _PEAK_CACHE[key]


def measure_matmul_flops(device: torch.device, dtype: torch.dtype | None = None, n: int = 1024,
                         seconds: float = 0.5) -> float:
    """Best observed FLOP/s of an n×n matmul on `device` (float32 unless `dtype`) — the practical peak a
    training step can reach."""
    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t))
    return best


def _final_metrics(log_path: Path, model, seq_len: int, n_flops: float, peak: float) -> dict:
    rows = read_jsonl(log_path)
    evals = [r for r in rows if "val_loss" in r]
    last = evals[-1]
    steady = [r["tokens_per_s"] for r in evals[1:]] or [last["tokens_per_s"]]
    tps = sorted(steady)[len(steady) // 2]
    return {
        "steps": last["step"], "tokens": last["tokens"], "train_loss": last["loss"], "val_loss": last["val_loss"],
        "val_bpb": last["val_bpb"], "tokens_per_s": tps, "mfu": tps * n_flops / peak, "peak_flops": peak,
        "flops_per_token": n_flops, "seq_len": seq_len, "train_seconds": last["elapsed_s"],
        "parameters": parameter_counts(model),
    }


def _progress(show: bool, total: int, start: int):
    return tqdm(total=total, initial=start, desc="pretrain", disable=not show, leave=False)


# The stage's life in its run folder (reuse, read the inputs, train, measure, commit): llmkit.lifecycle
run = lifecycle.runner(read_inputs, train, "Train (or resume training) and write RUN_DIR/pretrain.")
__all__ = ["PRESETS", "PretrainConfig", "config_for", "run"]  # its options: llmkit.options.pretrain
