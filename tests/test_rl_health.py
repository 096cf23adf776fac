"""RL health checks: each warning appears when its signal crosses its threshold, and a healthy log has none."""

from llmkit.report import Row
from llmkit.rl import health


def _log(**series) -> list[dict]:
    n = len(next(iter(series.values())))
    return [{"step": i + 1, **{k: v[i] for k, v in series.items()}} for i in range(n)]


HEALTHY = dict(reward=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], oracle_score=[0.5, 0.52, 0.55, 0.56, 0.6, 0.62],
               entropy=[1.0, 0.95, 0.9, 0.9, 0.85, 0.8], clipfrac=[0.01] * 6, cut_at_cap=[0.05] * 6,
               zero_std_groups=[0.2] * 6, kl_per_token=[0.0, 0.02, 0.04, 0.05, 0.06, 0.07])


def test_a_healthy_run_has_no_warnings_and_reports_each_check():
    checks, warnings = health.check(_log(**HEALTHY))
    assert warnings == []
    assert abs(checks["health_zero_std_groups"] - 0.2) < 1e-12
    assert checks["health_reward_trend"] > 0 and checks["health_oracle_trend"] > 0
    assert abs(checks["health_entropy_ratio"] - 0.825 / 0.975) < 1e-9


def test_each_check_warns_past_its_threshold():
    cases = {
        "zero_std_groups": ([0.9] * 6, "same reward"),
        "clipfrac": ([0.4] * 6, "clipped"),
        "cut_at_cap": ([0.0, 0.0, 0.1, 0.2, 0.5, 0.6], "length cap"),
        "entropy": ([1.0, 1.0, 0.5, 0.3, 0.1, 0.1], "stopped exploring"),
        "kl_per_token": ([0.1, 0.3, 0.5, 0.7, 0.9, 1.1], "nats per token"),
        "oracle_score": ([0.6, 0.6, 0.55, 0.5, 0.45, 0.4], "reward hacking"),
    }
    for key, (values, words) in cases.items():
        _, warnings = health.check(_log(**{**HEALTHY, key: values}))
        assert len(warnings) == 1 and words in warnings[0], (key, warnings)
    # the oracle falling while the reward falls too is no reward hacking
    _, warnings = health.check(_log(**{**HEALTHY, "reward": [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
                                       "oracle_score": [0.6, 0.6, 0.55, 0.5, 0.45, 0.4]}))
    assert warnings == []


def test_a_bar_that_must_be_passed_not_reached():
    row = Row("gain, lower end", "low", above=0.0)
    assert row.verdict({"low": 0.01}) == "met"
    assert row.verdict({"low": 0.0}) == "**not met**" and row.bar() == "> 0"


def test_the_rl_verdict_is_the_win_rates_interval_above_a_coin_flip():
    from llmkit.evaluate import win_rate_ci
    from llmkit.measures import POLICY_ROWS as RL_ROWS

    bar = next(r for r in RL_ROWS if r.key == "oracle_win_rate_ci_low")

    def verdict(wins: int, n: int = 400, samples: int = 1) -> str:
        rows = [{"oracle_policy": 1.0 if i < wins else 0.0, "oracle_sft": 0.5} for i in range(n)]
        rate, low, high = win_rate_ci(rows, n // samples)
        assert rate == wins / n and low < rate < high
        return bar.verdict({"oracle_win_rate_ci_low": low})

    assert verdict(230) == "met"  # 0.575, interval from 0.527
    assert verdict(210) == "**not met**"  # 0.525, interval from 0.476
    # four answers to each of 100 prompts are 100 pieces of evidence, not 400: about as many wins (232), grouped by
    # prompt (all four answers of 58 prompts win), are no longer enough
    grouped = [{"oracle_policy": 1.0 if (i % 100) < 58 else 0.0, "oracle_sft": 0.5} for i in range(400)]
    assert bar.verdict({"oracle_win_rate_ci_low": win_rate_ci(grouped, 100)[1]}) == "**not met**"


def test_rl_must_beat_sfts_oracle_score_by_a_margin():
    from llmkit.measures import POLICY_ROWS as RL_ROWS

    row = next(r for r in RL_ROWS if r.key == "eval_oracle_score")
    assert row.verdict({"eval_oracle_score": 0.56, "eval_oracle_score_sft": 0.5}) == "met"
    assert row.verdict({"eval_oracle_score": 0.54, "eval_oracle_score_sft": 0.5}) == "**not met**"
    assert row.bar() == "at least 0.05 above SFT"
    assert row.verdict({"eval_oracle_score": 0.54, "eval_oracle_score_sft": 0.5}, closed_world=False) == ""  # no oracle
