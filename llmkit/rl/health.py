"""RL health checks: what an RL run's log says about whether it learned anything real.

Every RL stage logs, per step (names as in log.jsonl):

    reward            what it was trained on: the reward model's score, the verifier's 0/1, or their sum
    oracle_score      on the closed world, the oracle's score of the same answers (the truth the reward stands for)
    kl                KL to the reference (SFT) per sequence; kl_per_token where the stage has it
    entropy           of the policy's next-token distribution over its answers
    clipfrac          share of tokens whose policy ratio was clipped
    cut_at_cap        share of answers that ran to max_new_tokens without ending
    zero_std_groups   GRPO/RLOO: share of prompts whose samples all got the same reward — no gradient from them

`check(records)` reads them after training and returns the summary that goes into metrics.json and the warnings
that go into the report. The thresholds are rules of thumb, stated beside each check; a warning says what to look
at, not that the run failed.
"""

from __future__ import annotations

ZERO_STD_MAX = 0.5  # most groups teach nothing: tasks too hard or too easy for the policy
CLIPFRAC_MAX = 0.2  # updates too large for the trust region
CUT_MAX = 0.2  # answers that never end: the reward of a cut answer judges half an answer
ENTROPY_FLOOR = 0.3  # of the first third's entropy: the policy stopped exploring
KL_PER_TOKEN_MAX = 0.5  # nats per token: far from SFT, where the reward model was never trained to judge
ORACLE_DROP = 0.02  # the oracle's score falling while the reward rises: reward hacking


def _thirds(records: list[dict], key: str) -> tuple[float, float] | None:
    """Mean of `key` over the first and the last third of the steps that logged it."""
    values = [float(r[key]) for r in records if isinstance(r.get(key), (int, float))]
    if len(values) < 3:
        return None
    k = max(1, len(values) // 3)
    return sum(values[:k]) / k, sum(values[-k:]) / k


def _mean(records: list[dict], key: str) -> float | None:
    values = [float(r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def check(records: list[dict]) -> tuple[dict, list[str]]:
    """(health metrics, warnings) from an RL stage's log records."""
    out: dict = {}
    warnings: list[str] = []
    zero = _mean(records, "zero_std_groups")
    if zero is not None:
        out["health_zero_std_groups"] = zero
        if zero > ZERO_STD_MAX:
            warnings.append(f"{zero:.0%} of the prompt groups gave all their samples the same reward, so they gave no "
                            "gradient: the tasks are too hard or too easy for this policy (other prompts, more "
                            "samples per prompt, or a higher temperature)")
    clip = _mean(records, "clipfrac")
    if clip is not None:
        out["health_clipfrac"] = clip
        if clip > CLIPFRAC_MAX:
            warnings.append(f"the policy ratio was clipped on {clip:.0%} of the tokens: the updates are too large "
                            "(lower the learning rate)")
    cut = _thirds(records, "cut_at_cap")
    if cut is not None:
        out["health_cut_at_cap"] = cut[1]
        if cut[1] > CUT_MAX:
            warnings.append(f"{cut[1]:.0%} of the answers in the last third of training were cut at the length cap: "
                            "raise max_new_tokens, or check that the policy still ends its turn")
    entropy = _thirds(records, "entropy")
    if entropy is not None and entropy[0] > 0:
        out["health_entropy_ratio"] = entropy[1] / entropy[0]
        if entropy[1] < ENTROPY_FLOOR * entropy[0]:
            warnings.append(f"the policy's entropy fell to {entropy[1] / entropy[0]:.0%} of its start: it stopped "
                            "exploring (a lower learning rate or a larger KL coefficient)")
    kl = _thirds(records, "kl_per_token")
    if kl is not None:
        out["health_kl_per_token"] = kl[1]
        if kl[1] > KL_PER_TOKEN_MAX:
            warnings.append(f"KL to SFT reached {kl[1]:.2f} nats per token: far from where the reward was measured "
                            "(raise the KL coefficient)")
    reward, oracle = _thirds(records, "reward"), _thirds(records, "oracle_score")
    if reward is not None and oracle is not None:
        out["health_reward_trend"] = reward[1] - reward[0]
        out["health_oracle_trend"] = oracle[1] - oracle[0]
        if reward[1] > reward[0] and oracle[1] < oracle[0] - ORACLE_DROP:
            warnings.append(f"the reward rose ({reward[0]:.3f} -> {reward[1]:.3f}) while the oracle's score of the same "
                            f"answers fell ({oracle[0]:.3f} -> {oracle[1]:.3f}): reward hacking")
    return out, warnings
