"""PPO for language models, InstructGPT-style, in one module you can read top to bottom.

TRL removed its `PPOTrainer` (gone since trl 1.13); this is llmkit's own. Four models:

    policy     π_θ    initialised from SFT, trained (or a LoRA adapter on it)
    reference  π_ref  the SFT model, frozen (with LoRA: the policy with its adapter switched off — no second copy)
    reward     r      the reward model, frozen — or a rule: `reward="verifier"` scores 1 for an exact final answer
                      (`llmkit.verifier`), `"both"` adds the two
    value      V_φ    initialised from the reward model (or, with the verifier alone, the policy with a new head),
                      trained; one value per token (its head on every position)

One PPO step:

1. **Rollout** (`PPOTrainer.rollout`). For a batch of prompts x, sample responses y = y_1 … y_T with the KV
   cache (`llmkit.generation.generate`), stopping at EOS; remember log π_old(y_t | x, y_<t), log π_ref(y_t | ·)
   and V_old(t), and the score s = r(x, y) (`PPOTrainer.scores`).
2. **Score** (`rewards_with_kl`, with 3). s minus `missing_eos_penalty` when the response did not stop by itself.
3. **Per-token KL and reward.** With log-ratio l_t = log π_old(y_t|·) − log π_ref(y_t|·):

       k1: kl_t = l_t                   k3: kl_t = (e^(−l_t) − 1) + l_t      (unbiased, always ≥ 0)
       r_t = −β · kl_t  +  [t = T] · s

4. **Advantages** (`advantages_and_returns`) by GAE (Schulman et al., 2016) over the response tokens:

       δ_t = r_t + γ V(t+1) − V(t)        A_t = δ_t + γλ A_{t+1}        R_t = A_t + V(t)

   then A is whitened (zero mean, unit variance over the batch's real response tokens).
5. **Update** (`PPOTrainer.update`), for `ppo_epochs` passes over shuffled minibatches:

       ρ_t = exp(log π_θ(y_t|·) − log π_old(y_t|·))
       L_policy = mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε))
       L_value  = ½ mean_t max((V_φ(t) − R_t)², (clip(V_φ(t), V_old(t) ± ε_v) − R_t)²)
       loss     = L_policy + c_v · L_value,   gradient norm clipped, AdamW step.

6. **KL control** (`KLController`). β is fixed, or adapts toward `target_kl` (Ziegler et al., 2019):
   β ← β · (1 + clip(KL / target − 1, −0.2, 0.2) · batch / horizon).

Logged per step: mean reward and score, KL (per sequence and per token), entropy, clip fraction, approximate
KL between old and new policy, value loss, explained variance, response length and how many responses ended
with EOS — and, on the closed world, the oracle's score of the same rollouts.

`PPOTrainer.step(prompts)` runs them in order; notebooks/06_rlhf_ppo.ipynb calls them one by one.

**On N processes** (`llmkit.launch`, `accelerate launch`) the same global batch gives the same steps as on one:

- *rollout*: each process samples, and has the old policy, the reference, the value and the reward model judge,
  its contiguous share of the batch's prompts. Row i of rollout k draws its tokens from its own random stream,
  seeded from (seed, k, i) (`rollout_seeds`; `generate(..., seeds=)`), so an answer does not depend on which
  process made it or what else was in its batch. The shares are then gathered (`gather_rollout`): every
  process holds the whole rollout, padded as one process would have padded it;
- *advantages* are computed on the whole rollout, the same on every process (whitened over the whole batch);
- *update*: every process shuffles the minibatches alike and takes its 1/N of each; it divides its share's
  losses by the whole minibatch's token count, so that the shares add up to the minibatch's masked mean, and
  after `backward` the gradients are summed over the processes (`sum_across_processes`) before clipping and the
  AdamW step, which every process then takes alike. The logged statistics are the summed, global ones.

The gradients are summed by an explicit all-reduce rather than by wrapping the models in DDP: the policy also
generates and (with LoRA) serves as the reference, and the value model is read through its backbone and head,
not its `forward` — paths a DDP wrapper does not see. Under several processes the main process writes the log,
the checkpoints and the model and evaluates it; the models are replicated on every process, never sharded.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate.utils import gather, gather_object, pad_across_processes
from peft import get_peft_model
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl.trainer.utils import disable_dropout_in_model

from llmkit import lifecycle, runs
from llmkit.formats import prompt_text
from llmkit.generation import Generation, generate, response_logprobs
from llmkit.loaders import Rejects, read_jsonl
from llmkit.model import load_causal_lm
from llmkit.options.ppo import PRESETS, PPOConfig, config_for
from llmkit.oracle import Oracle
from llmkit.reward_model import RewardModel
from llmkit.rl import inputs
from llmkit.training import lora_config, precision
from llmkit.verifier import is_correct


# ---- the math, one function per equation ---------------------------------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None, total: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of x over the entries where mask is 1. `total`: the count to divide by instead of the mask's own —
    a process holding a share of a minibatch divides by the whole minibatch's count, so that the shares' results
    add up to the minibatch's mean."""
    return (x * mask).sum(dim) / (mask.sum(dim) if total is None else total).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Variance over the masked entries, with Bessel's correction."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    return var * n / (n - 1) if n > 1 else var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x − mean) / std over the masked entries; entries outside the mask come out as 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * (var + 1e-8).rsqrt()
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
        return (-log_ratio).expm1() + log_ratio
    raise ValueError(f"kl_estimator {estimator!r}; accepted: k1, k3")


def rewards_with_kl(scores: torch.Tensor, ended: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor,
                    mask: torch.Tensor, beta: float, missing_eos_penalty: float = 0.0, estimator: str = "k1"):
    """Steps 2 and 3: the reward of each answer token, r_t = −β · kl_t, plus on its last token the score minus
    the penalty for an answer that did not end by itself. Returns (rewards, kl, the answers' final scores)."""
    final = scores - missing_eos_penalty * (~ended).float()
    kl = kl_per_token(logp, ref_logp, estimator) * mask
    rewards = -beta * kl
    last = mask.sum(-1).long() - 1
    rewards[range(len(final)), last] += final
    return rewards, kl, final


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimates and returns, (batch, T) each; positions outside `mask` are 0."""
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[1]
    advantages = rewards.new_zeros(rewards.shape)
    last = rewards.new_zeros(rewards.shape[0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else rewards.new_zeros(rewards.shape[0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def advantages_and_returns(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
                           lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 4: GAE's advantages, whitened over the batch's real answer tokens, and the returns."""
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    return masked_whiten(advantages, mask), returns


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float, n_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate objective (as a loss), with the clip fraction and approximate KL(old || new).
    `n_tokens`: the means' denominator where `mask` holds one process's share of the minibatch (`masked_mean`)."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - cliprange, 1 + cliprange)
    loss = masked_mean(unclipped.maximum(clipped), mask, total=n_tokens)
    stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask, total=n_tokens).item(),
             "approx_kl": masked_mean(0.5 * log_ratio.detach() ** 2, mask, total=n_tokens).item()}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float, n_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """½ · max of the squared errors of the new value and of the value clipped to old ± cliprange_value."""
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped_err, clipped_err = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(unclipped_err.maximum(clipped_err), mask, total=n_tokens)
    stats = {"vf_clipfrac": masked_mean((clipped_err > unclipped_err).float(), mask, total=n_tokens).item()}
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


# ---- rollouts and the value model ----------------------------------------------------------------
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
    """A batch of sampled answers (`generation`) and what the old policy, the reference, the value model and the
    reward model said about them; every tensor is (batch, answer tokens) but `scores` (batch,)."""

    generation: Generation
    logp: torch.Tensor  # log π_old(y_t | ·)
    entropy: torch.Tensor
    ref_logp: torch.Tensor  # log π_ref(y_t | ·)
    values: torch.Tensor  # V_old(t)
    scores: torch.Tensor  # r(x, y)


def rollout_seeds(seed: int, rollout: int, rows: int) -> list[int]:
    """One sampling seed per row of a rollout batch, from the run's seed and the rollout's number: row i of
    rollout k gets the same seed, and so draws the same tokens, on any number of processes."""
    draws = random.Random(f"ppo {seed} {rollout}")  # a string seed goes through SHA-512: the same in every process
    return [draws.getrandbits(63) for _ in range(rows)]


def gather_rollout(r: Rollout, prompts: list, pad_token_id: int) -> Rollout:
    """Every process's rollout of its share of the batch, put together in the batch's order on every process as
    one process would have made it: the prompts left-padded to the widest prompt, the answers right-padded to the
    longest answer (padding that the masks leave out of every sum)."""
    g = r.generation

    def together(x: torch.Tensor, pad: int = 0, left: bool = False) -> torch.Tensor:
        return gather(pad_across_processes(x, dim=1, pad_index=pad, pad_first=left))

    n = g.n_prompt
    prompt_ids = together(g.input_ids[:, :n], pad_token_id, left=True)
    prompt_mask = together(g.attention_mask[:, :n], left=True)
    input_ids = torch.cat([prompt_ids, together(g.input_ids[:, n:], pad_token_id)], 1)
    attention_mask = torch.cat([prompt_mask, together(g.attention_mask[:, n:])], 1)
    prompts_cut = int(gather(torch.tensor(g.prompts_cut, device=g.mask.device)).sum())
    generation = Generation(list(prompts), input_ids, attention_mask, prompt_ids.shape[1], together(g.mask),
                            gather_object(g.texts), gather(g.ended.long()).bool(), prompts_cut=prompts_cut)
    return Rollout(generation, together(r.logp), together(r.entropy), together(r.ref_logp), together(r.values),
                   gather(r.scores))


def sum_across_processes(tensors: list) -> None:
    """Replace each tensor, in place, by its sum over the processes: for the gradients of each process's share of
    a minibatch, the whole minibatch's gradient (what DDP's all-reduce makes)."""
    for t in tensors:
        dist.all_reduce(t)


def check_processes(config: PPOConfig, world_size: int) -> None:
    """A clear error before anything runs where `config` cannot run on `world_size` processes."""
    if config.mini_batch_size % world_size:
        raise runs.StageError(f"mini_batch_size {config.mini_batch_size} must be a multiple of the number of processes "
                              f"({world_size}): each process takes an equal share of every minibatch")
    for name, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(variable, "false").lower() == "true":
            raise runs.StageError(f"{name} was asked for ({variable}=true), but llmkit's PPO keeps its four models whole "
                                  "on every process and shards nothing: launch it with configs/accelerate/multi_gpu.yaml "
                                  "(DDP) or llmkit.launch")


# ---- the trainer ---------------------------------------------------------------------------------
class PPOTrainer:
    """Holds the four models and does PPO steps: `step(prompts)` = `rollout`, `rewards_with_kl`,
    `advantages_and_returns`, `update`, and the KL controller."""

    def __init__(self, config: PPOConfig, policy, tokenizer, reward_model, value_model, oracle=None):
        self.config, self.tokenizer, self.rm, self.oracle = config, tokenizer, reward_model, oracle
        self.policy, self.value_model = policy, value_model
        if config.lora:
            self.policy = get_peft_model(policy, lora_config(config, "CAUSAL_LM", policy))
            self.ref = None  # the reference is the policy with its adapter disabled
        else:
            self.ref = copy.deepcopy(policy).eval().requires_grad_(False)
        # No dropout (LoRA's included), as TRL's PPO had it: the ratio of a step's first update must be 1, and the
        # rollout's log-probabilities those of the policy that sampled it
        disable_dropout_in_model(self.policy)
        disable_dropout_in_model(self.value_model)
        self.opt = torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad], lr=config.learning_rate)
        self.value_opt = torch.optim.AdamW(self.value_model.parameters(), lr=config.value_learning_rate)
        self.kl_ctl = KLController(config.beta, config.target_kl, config.kl_horizon)
        # bf16 autocast where the config asks for it (auto: on a GPU that has it); the weights stay float32
        self.bf16 = precision(config.mixed_precision) == "bf16"
        self.rng = random.Random(config.seed)  # minibatch order
        self.rollouts = 0  # rollouts sampled so far: with the seed, they seed the next one's draws (`rollout_seeds`)
        self.world_size = runs.world_size()
        check_processes(config, self.world_size)
        self.rank = 0
        if self.world_size > 1:  # every process starts from the main process's weights, as DDP does
            self.rank = dist.get_rank()
            for p in self.trained_parameters():
                dist.broadcast(p.data, src=0)

    def trained_parameters(self) -> list:
        """The policy's trained parameters (its LoRA adapter's with LoRA) and the value model's."""
        return [p for p in [*self.policy.parameters(), *self.value_model.parameters()] if p.requires_grad]

    def state_dict(self) -> dict:
        """What a resumed run needs to go on exactly: both models, both optimizers, β, the minibatch order's RNG and
        the number of rollouts (the next one's seeds)."""
        return {"policy": self.policy.state_dict(), "value": self.value_model.state_dict(), "opt": self.opt.state_dict(),
                "value_opt": self.value_opt.state_dict(), "beta": self.kl_ctl.value, "rng": self.rng.getstate(),
                "rollouts": self.rollouts}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value_model.load_state_dict(state["value"])
        self.opt.load_state_dict(state["opt"])
        self.value_opt.load_state_dict(state["value_opt"])
        self.kl_ctl.value = state["beta"]
        self.rng.setstate(state["rng"])
        self.rollouts = state["rollouts"]

    def reference_logprobs(self, g: Generation) -> torch.Tensor:
        c = self.config
        if self.ref is None:
            with self.policy.disable_adapter():
                return response_logprobs(self.policy, g.input_ids, g.attention_mask, g.n_prompt, c.temperature)
        return response_logprobs(self.ref, g.input_ids, g.attention_mask, g.n_prompt, c.temperature)

    def scores(self, prompts: list, texts: list[str], answers: list | None = None) -> list[float]:
        """Step 2's score of each answer: the reward model's, the verifier's 1 or 0 against `answers`
        (`llmkit.verifier`), or their sum — as `config.reward` says."""
        c = self.config
        out = self.rm.score(prompts, texts) if c.reward in ("model", "both") else [0.0] * len(texts)
        if c.reward in ("verifier", "both"):
            out = [s + float(is_correct(t, a)) for s, t, a in zip(out, texts, answers)]
        return out

    def rollout(self, prompts: list, answers: list | None = None) -> Rollout:
        """Step 1: sample an answer to each prompt; what the old policy, the reference, the value model and the
        reward model say about them. Each row draws from its own seed (`rollout_seeds`). Under N processes each
        one does this for its contiguous share of `prompts` (the whole batch, the same on every process), and every
        process gets the whole rollout back (`gather_rollout`)."""
        c = self.config
        if len(prompts) % self.world_size:
            raise runs.StageError(f"a batch of {len(prompts)} prompts cannot be shared by {self.world_size} processes: "
                                  "give a multiple of the number of processes (batch_size)")
        seeds = rollout_seeds(c.seed, self.rollouts, len(prompts))
        self.rollouts += 1
        share = len(prompts) // self.world_size
        mine = slice(self.rank * share, (self.rank + 1) * share)
        g = generate(self.policy, self.tokenizer, prompts[mine], c.max_new_tokens, c.temperature, seeds=seeds[mine])
        with torch.no_grad():
            logp, entropy = response_logprobs(self.policy, g.input_ids, g.attention_mask, g.n_prompt, c.temperature,
                                              with_entropy=True)
            ref_logp = self.reference_logprobs(g)
            values = token_values(self.value_model, g.input_ids, g.attention_mask, g.n_prompt)
        scores = torch.tensor(self.scores(prompts[mine], g.texts, answers[mine] if answers else None), device=g.mask.device)
        r = Rollout(g, logp, entropy, ref_logp, values, scores)
        return gather_rollout(r, prompts, self.tokenizer.pad_token_id) if self.world_size > 1 else r

    def rewards(self, r: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step 3: per-token rewards (−β·KL on every answer token, the score with its missing-EOS penalty on the
        last), the per-token KL, and the final scores, at the KL controller's current β (`rewards_with_kl`)."""
        c = self.config
        return rewards_with_kl(r.scores, r.generation.ended, r.logp, r.ref_logp, r.generation.mask, self.kl_ctl.value,
                               c.missing_eos_penalty, c.kl_estimator)

    def losses(self, r: Rollout, advantages: torch.Tensor, returns: torch.Tensor, rows: list[int],
               n_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
        """The clipped policy loss and value loss of rollout rows `rows` under the current policy and value model,
        with their statistics (clip fractions, approximate KL): what step 5 minimises. `n_tokens` is the loss's
        denominator (default: the answer tokens of `rows`)."""
        c, g = self.config, r.generation
        idx = torch.tensor(rows, device=g.mask.device)
        ids, att, n_prompt, width = trim_padding(g.input_ids[idx], g.attention_mask[idx], g.n_prompt, g.mask[idx])
        m = g.mask[idx, :width]
        logp = response_logprobs(self.policy, ids, att, n_prompt, c.temperature)
        pl, ps = policy_loss(logp, r.logp[idx, :width], advantages[idx, :width], m, c.cliprange, n_tokens)
        vpred = token_values(self.value_model, ids, att, n_prompt)
        vl, vs = value_loss(vpred, r.values[idx, :width], returns[idx, :width], m, c.cliprange_value, n_tokens)
        return pl, vl, ps, vs

    def update(self, r: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> dict:
        """Step 5: `ppo_epochs` passes over shuffled minibatches, each one AdamW step of policy and value model
        on the clipped losses. Returns the mean of each loss statistic. Under N processes each one takes its 1/N of
        every minibatch and the gradients are summed over the processes before the step."""
        c, g = self.config, r.generation
        stats: dict[str, list] = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": [], "vf_clipfrac": []}
        self.policy.train()
        self.value_model.train()
        order = list(range(len(g.prompts)))
        share = c.mini_batch_size // self.world_size
        for _ in range(c.ppo_epochs):
            self.rng.shuffle(order)  # the same order on every process
            for i in range(0, len(order), c.mini_batch_size):
                minibatch = order[i:i + c.mini_batch_size]
                n_tokens = g.mask[minibatch].sum()  # the whole minibatch's answer tokens: every loss's denominator
                pl, vl, ps, vs = self.losses(r, advantages, returns, minibatch[self.rank * share:(self.rank + 1) * share],
                                             n_tokens)
                loss = pl + c.vf_coef * vl
                self.opt.zero_grad()
                self.value_opt.zero_grad()
                loss.backward()
                minibatch_stats = {**ps, **vs, "policy_loss": pl.item(), "value_loss": vl.item()}
                if self.world_size > 1:  # each process holds its share's part of the gradients and statistics
                    sum_across_processes([p.grad for p in self.trained_parameters() if p.grad is not None])
                    summed = torch.tensor(list(minibatch_stats.values()), dtype=torch.float64, device=g.mask.device)
                    sum_across_processes([summed])
                    minibatch_stats = dict(zip(minibatch_stats, summed.tolist()))
                torch.nn.utils.clip_grad_norm_([p for p in self.policy.parameters() if p.requires_grad], c.max_grad_norm)
                torch.nn.utils.clip_grad_norm_(self.value_model.parameters(), c.max_grad_norm)
                self.opt.step()
                self.value_opt.step()
                for k, v in minibatch_stats.items():
                    stats[k].append(v)
        return {k: sum(v) / len(v) for k, v in stats.items() if v}

    def step(self, prompts: list, answers: list | None = None) -> tuple[dict, Rollout]:
        """One PPO step on a batch of prompts (with the verifier: and their expected answers); returns its log record
        and the rollout."""
        with torch.autocast(next(self.policy.parameters()).device.type, torch.bfloat16) if self.bf16 \
                else contextlib.nullcontext():
            return self._step(prompts, answers)

    def _step(self, prompts: list, answers: list | None) -> tuple[dict, Rollout]:
        c = self.config
        r = self.rollout(prompts, answers)
        mask = r.generation.mask
        beta = self.kl_ctl.value
        rewards, kl, final = self.rewards(r)
        advantages, returns = advantages_and_returns(rewards, r.values, mask, c.gamma, c.lam)
        stats = self.update(r, advantages, returns)
        kl_seq = kl.sum(-1)
        self.kl_ctl.update(kl_seq.mean().item(), len(prompts))
        record = {
            "reward": final.mean().item(), "score": r.scores.mean().item(), "kl": kl_seq.mean().item(),
            "kl_per_token": masked_mean(kl, mask).item(), "beta": beta,
            "non_score_reward": (-beta * kl_seq).mean().item(), "entropy": masked_mean(r.entropy, mask).item(),
            "explained_variance": explained_variance(r.values, returns, mask),
            "response_length": mask.sum(-1).mean().item(), "eos_fraction": r.generation.ended.float().mean().item(),
            "cut_at_cap": 1 - r.generation.ended.float().mean().item(), "prompts_cut": r.generation.prompts_cut, **stats,
        }
        if answers is not None:
            record["verifier_reward"] = sum(map(is_correct, r.generation.texts, answers)) / len(answers)
        elif self.oracle is not None:
            record["oracle_score"] = sum(self.oracle.score(p, t) for p, t in zip(prompts, r.generation.texts)) / len(prompts)
        return record, r


# ---- the stage -----------------------------------------------------------------------------------
def read_inputs(config: PPOConfig, run_dir: Path, rejects: Rejects) -> inputs.RLInputs:
    if precision(config.mixed_precision) == "fp16":
        raise runs.StageError("mixed_precision=fp16: llmkit's PPO runs in bf16 or float32 (fp16 would need a loss "
                              "scaler); give bf16, no or auto")
    rl = inputs.read_inputs(config, run_dir, rejects)
    check_processes(config, runs.world_size())  # joins a launcher's process group: it picks this process's GPU
    return rl


def train(config: PPOConfig, rl: inputs.RLInputs, work: lifecycle.Work) -> dict:
    main = runs.is_main_process()
    torch.manual_seed(config.seed)
    tokenizer, policy, rm, value = load_models(rl.policy_dir, rl.rm_dir, with_rm=config.reward != "verifier")
    oracle = Oracle() if work.closed_world and main else None  # it scores the log's rollouts
    trainer = PPOTrainer(config, policy, tokenizer, rm, value, oracle)
    prompts, log = rl.prompts, work.log
    rng = random.Random(config.seed)
    order: list[int] = []
    checkpoint, first = work.dir / "checkpoint.pt", 1
    if work.resume and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)  # written by this stage, below
        trainer.load_state_dict(saved["trainer"])
        rng.setstate(saved["rng"])
        order, first = saved["order"], saved["step"] + 1
        torch.set_rng_state(saved["torch_rng"])
        if torch.cuda.is_available() and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        log.keep_until(saved["step"])
    start = time.perf_counter()
    bar = tqdm(total=config.max_steps, desc="ppo", initial=first - 1) if work.progress else None
    for step in range(first, config.max_steps + 1):
        if len(order) < config.batch_size:  # every prompt once per pass, in a new order each pass
            fresh = list(range(len(prompts)))
            rng.shuffle(fresh)
            order += fresh
        batch = [prompts[i] for i in order[: config.batch_size]]
        answers = [rl.answers[i] for i in order[: config.batch_size]] if rl.answers else None
        del order[: config.batch_size]
        t0 = time.perf_counter()
        record, rollout = trainer.step(batch, answers)
        record = {"step": step, **record, "step_seconds": time.perf_counter() - t0}
        if step % config.sample_every == 0 or step == config.max_steps:
            record["samples"] = [{"prompt": prompt_text(p), "continuation": t, "reward": round(float(s), 3)}
                                 for p, t, s in list(zip(batch, rollout.generation.texts, rollout.scores.tolist()))[:6]]
        log.write(record)
        if config.save_every > 0 and step % config.save_every == 0 and step < config.max_steps and main:
            save_checkpoint(checkpoint, {"trainer": trainer.state_dict(), "rng": rng.getstate(), "order": order,
                                         "step": step, "torch_rng": torch.get_rng_state(),
                                         "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                                         else None})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward']:.2f}", kl=f"{record['kl']:.2f}")
    if bar is not None:
        bar.close()
    train_seconds = time.perf_counter() - start  # since the start or the resume
    if not main:  # every process holds the same trained weights: the main one saves them
        return {}
    checkpoint.unlink(missing_ok=True)
    model = trainer.policy.merge_and_unload() if config.lora else trainer.policy
    model.eval()
    model.save_pretrained(work.dir, safe_serialization=True)
    tokenizer.save_pretrained(work.dir)
    records = read_jsonl(work.dir / "log.jsonl")
    return {"reward": config.reward, "steps": config.max_steps, "train_seconds": train_seconds,
            "seconds_per_step": train_seconds / max(1, config.max_steps), "final_beta": trainer.kl_ctl.value,
            "resumed_from_step": first - 1, "processes": trainer.world_size,
            "prompts_cut": sum(r.get("prompts_cut", 0) for r in records)}


def save_checkpoint(path: Path, state: dict) -> None:
    """Write the resume state next to `path` and rename it into place: a kill while saving leaves the last one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_models(policy_dir: Path, rm_dir: Path | None, with_rm: bool = True):
    """(tokenizer, policy, reward model, value model initialised from the reward model), on the GPU if there is one.
    Without `rm_dir` (the verifier alone rewards) the value model starts from the policy with a new head, and
    without `with_rm` no reward model is loaded (None)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(policy_dir, local_files_only=True)
    policy = load_causal_lm(policy_dir, device)
    rm = RewardModel.load(rm_dir, device) if with_rm and rm_dir is not None else None
    value = AutoModelForSequenceClassification.from_pretrained(rm_dir or policy_dir, local_files_only=True, num_labels=1,
                                                               dtype=torch.float32).to(device)
    if rm is not None and rm.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise runs.StageError(f"{rm_dir}: the reward model's tokenizer differs from the policy's ({policy_dir}); "
                              "train the reward model from the same SFT checkpoint")
    return tokenizer, policy, rm, value


# The stage's life in its run folder (reuse, read the inputs, train, measure, commit): llmkit.lifecycle
run = lifecycle.runner(read_inputs, train, "Optimise the SFT policy against the reward model with PPO and write "
                       "RUN_DIR/ppo. On N processes (a launcher started them) each one does its share of every step; "
                       "the main process writes the folder.")
__all__ = ["PPOConfig", "PRESETS", "config_for", "run"]  # its options: llmkit.options.ppo
