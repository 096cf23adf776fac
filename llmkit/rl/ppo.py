"""PPO for language models, InstructGPT-style, in one module you can read top to bottom.

TRL removed its `PPOTrainer` (gone since trl 1.13); this is llmkit's own. Four models:

    policy     π_θ    initialised from SFT, trained (or a LoRA adapter on it)
    reference  π_ref  the SFT model, frozen (with LoRA: the policy with its adapter switched off — no second copy)
    reward     r      the reward model, frozen
    value      V_φ    initialised from the reward model, trained; one value per token (its head on every position)

One PPO step:

1. **Rollout.** For a batch of prompts x, sample responses y = y_1 … y_T with the KV cache (`generate`),
   stopping at EOS; remember log π_old(y_t | x, y_<t) and V_old(t).
2. **Score.** s = r(x, y), minus `missing_eos_penalty` when the response did not stop by itself.
3. **Per-token KL and reward.** With log-ratio l_t = log π_old(y_t|·) − log π_ref(y_t|·):

       k1: kl_t = l_t                   k3: kl_t = (e^(−l_t) − 1) + l_t      (unbiased, always ≥ 0)
       r_t = −β · kl_t  +  [t = T] · s

4. **Advantages** by GAE (Schulman et al., 2016) over the response tokens:

       δ_t = r_t + γ V(t+1) − V(t)        A_t = δ_t + γλ A_{t+1}        R_t = A_t + V(t)

   then A is whitened (zero mean, unit variance over the batch's real response tokens).
5. **Update**, for `ppo_epochs` passes over shuffled minibatches:

       ρ_t = exp(log π_θ(y_t|·) − log π_old(y_t|·))
       L_policy = mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε))
       L_value  = ½ mean_t max((V_φ(t) − R_t)², (clip(V_φ(t), V_old(t) ± ε_v) − R_t)²)
       loss     = L_policy + c_v · L_value,   gradient norm clipped, AdamW step.

6. **KL control.** β is fixed, or adapts toward `target_kl` (Ziegler et al., 2019):
   β ← β · (1 + clip(KL / target − 1, −0.2, 0.2) · batch / horizon).

Logged per step: mean reward and score, KL (per sequence and per token), entropy, clip fraction, approximate
KL between old and new policy, value loss, explained variance, response length and how many responses ended
with EOS — and, on the closed world, the oracle's score of the same rollouts.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llmkit import runs
from llmkit.curves import save_curves
from llmkit.loaders import DataError, bundled_path, iter_records, read_jsonl, write_jsonl

STAGE = "ppo"


class PPOError(ValueError):
    """Bad input to PPO: the message says what is wrong and what is accepted."""


@dataclass
class PPOConfig:
    policy_model: str | None = None  # None: RUN_DIR/sft
    reward_model: str | None = None  # None: RUN_DIR/reward
    prompts: str | None = None  # None: the bundled RL prompts; else jsonl with a `prompt` (string or messages)
    eval_prompts: str | None = None  # None: the bundled held-out RL prompts
    steps: int = 40  # PPO steps (one rollout batch each)
    batch_size: int = 32  # prompts per rollout
    mini_batch_size: int = 8
    ppo_epochs: int = 2
    learning_rate: float = 2e-5  # measured on tiny: 2e-5 keeps trained-entity QA within 4 points, 5e-5 loses 34
    value_learning_rate: float = 1e-4
    max_new_tokens: int = 40
    temperature: float = 0.7  # the tiny SFT model at 1.0 rambles past EOS on most prompts
    missing_eos_penalty: float = 1.0
    kl_coef: float = 0.1  # β; measured on tiny (BENCHMARKS.md): 0.5 / 0.2 / 0.1 / 0.05 -> win-rate 0.627 / 0.647 /
    # 0.654 / 0.655 at KL 0.08 / 0.11 / 0.14 / 0.17 per token; held-out QA −1 / +0.3 / +6.9 / +2.8 points against SFT
    kl_estimator: str = "k1"  # "k1" or "k3"
    target_kl: float | None = None  # per-sequence KL to aim at (adaptive β); None: β fixed
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    max_grad_norm: float = 1.0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    eval_every: int = 10
    sample_every: int = 10  # log a table of rollouts every N steps
    eval_limit: int = 100  # held-out prompts for the final evaluation
    eval_samples_per_prompt: int = 4  # answers per held-out prompt and side: 400 comparisons, not 100 (less noise)
    qa_limit: int | None = None  # closed-world QA questions per split after training (None: all 320 / 480, ~10 s).
    # The first 80 were too few for a 5-point bar: two seeds of PPO read +2.5 / -6.3 points there, +6.9 / -3.7 on all
    closed_world: bool | None = None  # None: on with the bundled prompts (oracle scores logged and evaluated)
    stage_name: str | None = None  # output folder name; None: "ppo"
    seed: int = 0


STEP_PRESETS = {"smoke": {"steps": 3, "batch_size": 8, "mini_batch_size": 4, "max_new_tokens": 12, "eval_every": 2,
                          "sample_every": 2, "eval_limit": 8, "eval_samples_per_prompt": 1, "qa_limit": 8}}


def config_for(preset: str = "tiny", **overrides) -> PPOConfig:
    if preset in STEP_PRESETS:
        return PPOConfig(**{**STEP_PRESETS[preset], **overrides})
    return PPOConfig(**overrides)


# ---- the math, one function per equation ---------------------------------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Variance over the masked entries, with Bessel's correction."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    return var * n / (n - 1) if n > 1 else var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x − mean) / std over the masked entries; entries outside the mask come out as 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π || π_ref) from samples of π: k1 = log π − log π_ref; k3 = (ρ − 1) − log ρ
    with ρ = π_ref / π (Schulman's low-variance, non-negative estimator)."""
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl_estimator {estimator!r}; accepted: k1, k3")


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimates and returns, (batch, T) each; positions outside `mask` are 0."""
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate objective (as a loss), with the clip fraction and approximate KL(old || new)."""
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
                 "approx_kl": masked_mean(0.5 * log_ratio ** 2, mask).item()}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> tuple[torch.Tensor, dict]:
    """½ · max of the squared errors of the new value and of the value clipped to old ± cliprange_value."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_err, clipped_err = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((clipped_err > unclipped_err).float(), mask).item()}
    return loss, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(R − V) / Var(R): 1 when the value model predicts the returns, ≤ 0 when it does not help."""
    var_returns = masked_var(returns, mask)
    return float(1 - masked_var(returns - values, mask) / var_returns) if var_returns > 0 else float("nan")


class KLController:
    """β: fixed, or adapted toward a target KL per sequence (Ziegler et al., 2019)."""

    def __init__(self, init: float, target: float | None = None, horizon: int = 10000):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, kl: float, n: int) -> None:
        if self.target is None:
            return
        error = max(-0.2, min(0.2, kl / self.target - 1))
        self.value *= 1 + error * n / self.horizon


# ---- models --------------------------------------------------------------------------------------
def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_prompt: int,
                      temperature: float, with_entropy: bool = False):
    """log π(y_t | x, y_<t) of each response token (and the policy's entropy there), with the positions that
    generation used (left padding shifts them)."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logits = logits[:, n_prompt - 1:-1].float() / temperature
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, input_ids[:, n_prompt:, None])[..., 0]
    if not with_entropy:
        return logp
    return logp, -(logp_all.exp() * logp_all).sum(-1)


def token_values(value_model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_prompt: int) -> torch.Tensor:
    """V(t) for each response token: the value head read at the position that predicts y_t."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    backbone = getattr(value_model, value_model.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
    return value_model.score(hidden)[:, n_prompt - 1:-1, 0].float()


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor, n_prompt: int, mask: torch.Tensor):
    """(input_ids, attention_mask, prompt width, response width) of a minibatch of rollouts without the columns
    none of its rows uses: the prompt padding they all share on the left, and the positions past their longest
    response. Positions come from the attention mask, so the model computes the same on every remaining token;
    the rollout batch is as wide as its longest prompt and longest answer, a minibatch of 8 often much less."""
    lead = int(attention_mask[:, :n_prompt].any(0).float().argmax())  # the first column a prompt uses
    width = int(mask.sum(-1).max())
    return input_ids[:, lead:n_prompt + width], attention_mask[:, lead:n_prompt + width], n_prompt - lead, width


@dataclass
class Rollout:
    prompts: list
    input_ids: torch.Tensor  # (B, P + T): left-padded prompt, then response
    attention_mask: torch.Tensor
    n_prompt: int
    mask: torch.Tensor  # (B, T): 1 on real response tokens (through EOS)
    texts: list[str]
    ended: torch.Tensor  # (B,) bool: the response stopped at EOS


@torch.no_grad()
def generate(policy, tokenizer, prompts: list, max_new_tokens: int, temperature: float = 1.0,
             do_sample: bool = True, use_cache: bool = True) -> Rollout:
    """Sample one response per prompt with the KV cache, through the chat template."""
    device = next(policy.parameters()).device
    chats = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    finally:
        tokenizer.padding_side = side
    was_training = policy.training
    policy.eval()
    out = policy.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                          temperature=temperature if do_sample else None, top_p=1.0 if do_sample else None,
                          top_k=0 if do_sample else None, use_cache=use_cache,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    policy.train(was_training)
    n_prompt = enc["input_ids"].shape[1]
    response = out[:, n_prompt:]
    is_eos = response == tokenizer.eos_token_id
    ended = is_eos.any(-1)
    first_eos = torch.where(ended, is_eos.float().argmax(-1), torch.full_like(ended, response.shape[1] - 1, dtype=torch.long))
    mask = (torch.arange(response.shape[1], device=device)[None] <= first_eos[:, None]).float()
    response = torch.where(mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    input_ids = torch.cat([enc["input_ids"], response], 1)
    attention_mask = torch.cat([enc["attention_mask"], mask.long()], 1)
    decoded = [tokenizer.decode(r[m.bool() & (r != tokenizer.eos_token_id)], skip_special_tokens=True).strip()
               for r, m in zip(response, mask)]
    return Rollout(prompts, input_ids, attention_mask, n_prompt, mask, decoded, ended)


# ---- the trainer ---------------------------------------------------------------------------------
class PPOTrainer:
    """Holds the four models and does PPO steps: `step(prompts)` = rollout, score, advantages, update."""

    def __init__(self, config: PPOConfig, policy, tokenizer, reward_model, value_model, oracle=None):
        self.config, self.tokenizer, self.rm, self.oracle = config, tokenizer, reward_model, oracle
        self.policy, self.value_model = policy, value_model
        if config.lora:
            from peft import LoraConfig, get_peft_model

            self.policy = get_peft_model(policy, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                            target_modules="all-linear", task_type="CAUSAL_LM"))
            self.ref = None  # the reference is the policy with its adapter disabled
        else:
            self.ref = copy.deepcopy(policy).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad], lr=config.learning_rate)
        self.value_opt = torch.optim.AdamW(self.value_model.parameters(), lr=config.value_learning_rate)
        self.kl_ctl = KLController(config.kl_coef, config.target_kl, config.kl_horizon)
        self.rng = random.Random(config.seed)  # minibatch order

    @torch.no_grad()
    def ref_logprobs(self, r: Rollout) -> torch.Tensor:
        c = self.config
        if self.ref is None:
            with self.policy.disable_adapter():
                return response_logprobs(self.policy, r.input_ids, r.attention_mask, r.n_prompt, c.temperature)
        return response_logprobs(self.ref, r.input_ids, r.attention_mask, r.n_prompt, c.temperature)

    def step(self, prompts: list) -> tuple[dict, Rollout, torch.Tensor]:
        c = self.config
        # 1. rollout, and what the old policy, the reference and the value model say about it
        r = generate(self.policy, self.tokenizer, prompts, c.max_new_tokens, c.temperature)
        with torch.no_grad():
            old_logp, entropy = response_logprobs(self.policy, r.input_ids, r.attention_mask, r.n_prompt,
                                                  c.temperature, with_entropy=True)
            ref_logp = self.ref_logprobs(r)
            old_values = token_values(self.value_model, r.input_ids, r.attention_mask, r.n_prompt)
        mask = r.mask
        # 2. score
        scores = torch.tensor(self.rm.score(prompts, r.texts), device=mask.device)
        rewards_seq = scores - c.missing_eos_penalty * (~r.ended).float()
        # 3. per-token KL penalty, the score on the last token
        kl = kl_per_token(old_logp, ref_logp, c.kl_estimator) * mask
        beta = self.kl_ctl.value
        rewards = -beta * kl
        last = mask.sum(-1).long() - 1
        rewards[torch.arange(len(prompts)), last] += rewards_seq
        # 4. advantages
        advantages, returns = gae(rewards, old_values, mask, c.gamma, c.lam)
        advantages = masked_whiten(advantages, mask)
        # 5. PPO epochs over minibatches
        stats: dict[str, list] = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": [], "vf_clipfrac": []}
        self.policy.train()
        self.value_model.train()
        order = list(range(len(prompts)))
        for _ in range(c.ppo_epochs):
            self.rng.shuffle(order)
            for i in range(0, len(order), c.mini_batch_size):
                idx = torch.tensor(order[i:i + c.mini_batch_size], device=mask.device)
                ids, att, n_prompt, width = trim_padding(r.input_ids[idx], r.attention_mask[idx], r.n_prompt, mask[idx])
                m = mask[idx, :width]
                logp = response_logprobs(self.policy, ids, att, n_prompt, c.temperature)
                pl, ps = policy_loss(logp, old_logp[idx, :width], advantages[idx, :width], m, c.cliprange)
                vpred = token_values(self.value_model, ids, att, n_prompt)
                vl, vs = value_loss(vpred, old_values[idx, :width], returns[idx, :width], m, c.cliprange_value)
                loss = pl + c.vf_coef * vl
                self.opt.zero_grad()
                self.value_opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for p in self.policy.parameters() if p.requires_grad], c.max_grad_norm)
                torch.nn.utils.clip_grad_norm_(self.value_model.parameters(), c.max_grad_norm)
                self.opt.step()
                self.value_opt.step()
                for k, v in {**ps, **vs, "policy_loss": pl.item(), "value_loss": vl.item()}.items():
                    stats[k].append(v)
        # 6. KL control
        kl_seq = kl.sum(-1)
        self.kl_ctl.update(kl_seq.mean().item(), len(prompts))
        record = {
            "reward": rewards_seq.mean().item(), "score": scores.mean().item(), "kl": kl_seq.mean().item(),
            "kl_per_token": masked_mean(kl, mask).item(), "kl_coef": beta,
            "non_score_reward": (-beta * kl_seq).mean().item(), "entropy": masked_mean(entropy, mask).item(),
            "explained_variance": explained_variance(old_values, returns, mask),
            "response_length": mask.sum(-1).mean().item(), "eos_fraction": r.ended.float().mean().item(),
            **{k: sum(v) / len(v) for k, v in stats.items() if v},
        }
        if self.oracle is not None:
            record["oracle_score"] = sum(self.oracle.score(p, t) for p, t in zip(prompts, r.texts)) / len(prompts)
        return record, r, scores


# ---- the stage -----------------------------------------------------------------------------------
def run(config: PPOConfig, run_dir: str | Path, overwrite: bool = False, progress: bool = True,
        callbacks: tuple = ()) -> runs.StageResult:
    """Optimise the SFT policy against the reward model with PPO and write RUN_DIR/ppo."""
    run_dir = Path(run_dir)
    stage = config.stage_name or STAGE
    done = runs.stage_dir(run_dir, stage)
    if runs.finished(done) and not overwrite:
        return runs.StageResult(stage, done, runs.read_metrics(done), reused=True)
    if config.kl_estimator not in ("k1", "k3"):
        raise PPOError(f"kl_estimator={config.kl_estimator!r}; accepted: k1, k3")
    if config.batch_size % config.mini_batch_size:
        raise PPOError(f"batch_size {config.batch_size} must be a multiple of mini_batch_size {config.mini_batch_size}")
    policy_dir, rm_dir, prompts, eval_prompts = resolve_inputs(config, run_dir)
    final, work = runs.reuse_or_start(run_dir, stage, overwrite)
    if work is None:
        return runs.StageResult(stage, final, runs.read_metrics(final), reused=True)
    try:
        return _train(config, policy_dir, rm_dir, prompts, eval_prompts, final, work, progress, callbacks)
    except BaseException:
        runs.abandon(work)
        raise


def resolve_inputs(config, run_dir: Path) -> tuple[Path, Path, list, list]:
    """(policy folder, reward-model folder, training prompts, eval prompts) of an RL stage — checked before
    anything is written. `config` has policy_model, reward_model, prompts, eval_prompts and eval_limit."""
    policy_dir = Path(config.policy_model) if config.policy_model else run_dir / "sft"
    rm_dir = Path(config.reward_model) if config.reward_model else run_dir / "reward"
    for path, what, hint in ((policy_dir, "policy", "llmkit sft"), (rm_dir, "reward model", "llmkit reward")):
        if not (path / "config.json").exists():
            raise PPOError(f"{path}: no {what} there (no config.json); run {hint} --run-dir {run_dir} first "
                           "or pass its folder")
    prompts = _read_prompts(config.prompts or bundled_path("rl_prompts_train.jsonl"))
    eval_prompts = _read_prompts(config.eval_prompts or bundled_path("rl_prompts_eval.jsonl"))[: config.eval_limit]
    return policy_dir, rm_dir, prompts, eval_prompts


def load_models(policy_dir: Path, rm_dir: Path):
    """(tokenizer, policy, reward model, value model initialised from the reward model)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from llmkit.reward import RewardModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(policy_dir, local_files_only=True)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir, local_files_only=True, dtype=torch.float32).to(device)
    rm = RewardModel.load(rm_dir, device)
    value = AutoModelForSequenceClassification.from_pretrained(rm_dir, local_files_only=True, dtype=torch.float32).to(device)
    if rm.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise PPOError(f"{rm_dir}: the reward model's tokenizer differs from the policy's ({policy_dir}); train the "
                       "reward model from the same SFT checkpoint")
    return tokenizer, policy, rm, value


def _train(config, policy_dir, rm_dir, prompts, eval_prompts, final, work, progress, callbacks):
    from llmkit.oracle import Oracle

    torch.manual_seed(config.seed)
    closed_world = config.closed_world if config.closed_world is not None else config.prompts is None
    oracle = Oracle() if closed_world else None
    tokenizer, policy, rm, value = load_models(policy_dir, rm_dir)
    trainer = PPOTrainer(config, policy, tokenizer, rm, value, oracle)
    log_path = work / "log.jsonl"
    rng = random.Random(config.seed)
    order: list[int] = []
    start = time.perf_counter()
    bar = _progress(config.steps, progress)
    for step in range(1, config.steps + 1):
        if len(order) < config.batch_size:
            fresh = list(range(len(prompts)))
            rng.shuffle(fresh)
            order += fresh
        batch = [prompts[i] for i in order[: config.batch_size]]
        del order[: config.batch_size]
        t0 = time.perf_counter()
        record, rollout, scores = trainer.step(batch)
        record = {"step": step, **record, "step_seconds": time.perf_counter() - t0}
        if step % config.sample_every == 0 or step == config.steps:
            record["samples"] = [{"prompt": _prompt_text(p), "continuation": t, "reward": round(float(s), 3)}
                                 for p, t, s in list(zip(batch, rollout.texts, scores.tolist()))[:6]]
        _log(log_path, record, callbacks)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward']:.2f}", kl=f"{record['kl']:.2f}")
    if bar is not None:
        bar.close()
    train_seconds = time.perf_counter() - start

    model = trainer.policy.merge_and_unload() if config.lora else trainer.policy
    model.eval()
    model.save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)
    metrics = {"policy_model": str(policy_dir), "reward_model": str(rm_dir), "steps": config.steps,
               "train_seconds": train_seconds, "seconds_per_step": train_seconds / max(1, config.steps),
               "final_kl_coef": trainer.kl_ctl.value}
    ref = trainer.ref if trainer.ref is not None else _load_causal(policy_dir, next(model.parameters()).device)
    comparison = compare_policies(model, ref, tokenizer, rm, eval_prompts, config, oracle)
    write_jsonl(work / "eval_samples.jsonl", comparison.pop("rows"))
    metrics.update(comparison)
    if closed_world:
        metrics.update(_qa(model, ref, tokenizer, config.qa_limit, policy_dir))
    save_curves(work)
    return runs.commit(work, final, config, metrics)


# ---- evaluation ----------------------------------------------------------------------------------
@torch.no_grad()
def compare_policies(policy, reference, tokenizer, rm, prompts: list, config: PPOConfig, oracle=None) -> dict:
    """The trained policy against the reference (SFT) on held-out prompts, both sampled at the training
    temperature, `config.eval_samples_per_prompt` answers each, with the same seed: RM score, oracle score and
    win-rate (ties count half), per-token KL to the reference on the policy's own samples, and response length.
    On the closed world also each answer's first flaw by the oracle (`Oracle.flaw`), and the share of answers
    that are rude or rambling: the demonstrators' habits that SFT imitated and the preference rule dislikes."""
    prompts = list(prompts) * config.eval_samples_per_prompt
    torch.manual_seed(config.seed + 1)
    mine = generate(policy, tokenizer, prompts, config.max_new_tokens, config.temperature)
    torch.manual_seed(config.seed + 1)
    theirs = generate(reference, tokenizer, prompts, config.max_new_tokens, config.temperature)
    logp = response_logprobs(policy, mine.input_ids, mine.attention_mask, mine.n_prompt, config.temperature)
    ref_logp = response_logprobs(reference, mine.input_ids, mine.attention_mask, mine.n_prompt, config.temperature)
    kl = kl_per_token(logp, ref_logp, "k1")
    out = {"eval_rm_score": sum(rm.score(prompts, mine.texts)) / len(prompts),
           "eval_rm_score_sft": sum(rm.score(prompts, theirs.texts)) / len(prompts),
           "eval_kl_per_token": masked_mean(kl, mine.mask).item(),
           "eval_kl_per_sequence": (kl * mine.mask).sum(-1).mean().item(),
           "eval_response_length": mine.mask.sum(-1).mean().item(),
           "eval_response_length_sft": theirs.mask.sum(-1).mean().item(),
           "eval_eos_fraction": mine.ended.float().mean().item()}
    rows = [{"prompt": _prompt_text(p), "ppo": a, "sft": b} for p, a, b in zip(prompts, mine.texts, theirs.texts)]
    if oracle is not None:
        wins = 0.0
        total_mine = total_sft = 0.0
        for row, p, a, b in zip(rows, prompts, mine.texts, theirs.texts):
            sa, sb = oracle.score(p, a), oracle.score(p, b)
            row.update(oracle_ppo=sa, oracle_sft=sb, flaw_ppo=oracle.flaw(p, a), flaw_sft=oracle.flaw(p, b))
            total_mine, total_sft = total_mine + sa, total_sft + sb
            wins += 1.0 if sa > sb else 0.5 if sa == sb else 0.0
        habits = ("rude", "rambling")
        out.update(eval_oracle_score=total_mine / len(prompts), eval_oracle_score_sft=total_sft / len(prompts),
                   oracle_win_rate=wins / len(prompts),
                   eval_habit_rate=sum(r["flaw_ppo"] in habits for r in rows) / len(rows),
                   eval_habit_rate_sft=sum(r["flaw_sft"] in habits for r in rows) / len(rows),
                   eval_flaws=dict(Counter(r["flaw_ppo"] for r in rows)),
                   eval_flaws_sft=dict(Counter(r["flaw_sft"] for r in rows)))
    out["rows"] = rows
    return out


def _qa(model, reference, tokenizer, limit, reference_dir: Path | None = None) -> dict:
    """Closed-world QA of the trained policy and of the reference. The reference's is read from its stage's
    metrics.json when that stage (an llmkit SFT run) measured it on the same questions: the same greedy
    answers by the same function, and 800 fewer to generate."""
    from llmkit.evaluate import qa_accuracy

    stage_config = (runs.read_stage_config(reference_dir)
                    if reference_dir is not None and runs.finished(reference_dir) else None)
    same_questions = stage_config is not None and stage_config.get("qa_limit", "absent") == limit
    known = runs.read_metrics(reference_dir) if same_questions else {}
    out = {}
    for split in ("heldout", "trained"):
        rows = read_jsonl(bundled_path(f"qa_{split}.jsonl"))[:limit]
        out[f"qa_{split}"] = qa_accuracy(model, tokenizer, rows)["accuracy"]
        out[f"sft_qa_{split}"] = (known[f"qa_{split}"] if f"qa_{split}" in known
                                  else qa_accuracy(reference, tokenizer, rows)["accuracy"])
    return out


# ---- helpers -------------------------------------------------------------------------------------
def _read_prompts(path) -> list:
    out = []
    for row, where in iter_records(path):
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not (isinstance(prompt, str) and prompt.strip()) and not (isinstance(prompt, list) and prompt):
            raise DataError(f"{where}: a prompt row needs `prompt`: a string or a list of messages")
        out.append(prompt)
    if not out:
        raise DataError(f"{path}: no prompts found")
    return out


def _prompt_text(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def _load_causal(path, device):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).to(device).eval()


def _log(path: Path, record: dict, callbacks) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    for cb in callbacks:
        cb.on_log(record)


def _progress(total: int, on: bool):
    if not on:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="ppo")
