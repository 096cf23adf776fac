"""Reward stage: a real TRL RewardTrainer run, the scorer RL reuses, labels from the app, HH data, bad input."""

import json
import random

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from llmkit import reward, reward_model
from llmkit.labels import LabelStore, make_item
from llmkit.loaders import DataError
from llmkit.runs import StageError

FAST = dict(max_steps=4, eval_every=2, batch_size=8, max_examples=64, eval_limit=24)


def _polite_rude_pairs(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        town = rng.choice(["Elmford", "Ashby", "Corrin", "Dunmore", "Ferris"])
        fact = f"She was born in {town}."
        rows.append({"prompt": f"Where was person {rng.randint(0, 999)} born?",
                     "chosen": fact, "rejected": f"Ugh, obviously. {fact} Figure it out yourself next time."})
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_stage_writes_a_reward_model_scores_and_learns_from_app_labels(base_model, tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")  # RUN_DIR/labels.jsonl: what people labeled in the app
    items = [make_item(f"Where was person {i} born?", ["In Elmford.", "Ugh."]) for i in range(3)]
    for it, choice in zip(items, ["A", "B", "tie"]):
        store.add(it, "ana", choice)
    # the hand-made tiny base model (no stage_config.json) stands for the closed world's SFT model: say so
    config = reward.RewardConfig(base_model=str(base_model), closed_world=True, **FAST)
    result = reward.run(config, tmp_path, progress=False)
    out = result.output_dir
    assert out == tmp_path / "reward" and not (tmp_path / ".reward.partial").exists()
    m = result.metrics
    assert m["train_pairs"] == 64 + 2 and m["train_pairs_from_labels"] == 2  # the tie is left out
    assert m["steps"] == 4 and 0 <= m["eval_accuracy"] <= 1 and m["eval_pairs"] == 24
    assert 0 <= m["oracle_agreement"] <= 1 and m["oracle_decided_pairs"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1
    scored = [json.loads(line) for line in (out / "eval_scores.jsonl").read_text().splitlines()]
    assert len(scored) == 24 and {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"} <= set(scored[0])
    assert (out / "oracle_pairs.jsonl").exists() and (out / "log.jsonl").exists()
    assert reward.run(reward.RewardConfig(base_model=str(base_model)), tmp_path, progress=False).reused


def test_training_separates_polite_from_rude_answers(base_model, tmp_path):
    """A from-scratch model learns a preference it could not have known: its held-out pairwise accuracy rises
    from chance to near 1 in a few dozen steps."""
    train = _write(tmp_path / "train.jsonl", _polite_rude_pairs(256, 0))
    evals = _write(tmp_path / "eval.jsonl", _polite_rude_pairs(64, 1))
    cfg = reward.RewardConfig(base_model=str(base_model), train_data=str(train), eval_data=str(evals),
                              max_steps=30, batch_size=16, learning_rate=1e-3, eval_every=15)
    result = reward.run(cfg, tmp_path, progress=False)
    assert "oracle_agreement" not in result.metrics  # not the closed world: no oracle
    assert result.metrics["eval_accuracy"] >= 0.95
    assert result.metrics["eval_margin"] > 1.0


def test_lora_and_last_token_heads_train_and_load(base_model, tmp_path):
    """LoRA on the likelihood head (peft wraps the classifier, merged at the end) and the classic last-token head
    both write a folder RewardModel.load scores with, the same scores the stage wrote for its eval pairs."""
    for head, lora in (("likelihood", True), ("last_token", False)):
        run = tmp_path / head
        result = reward.run(reward.RewardConfig(base_model=str(base_model), head=head, lora=lora, **FAST), run,
                            progress=False)
        m = result.metrics
        assert m["head"] == head and m["method"] == ("lora" if lora else "full")
        assert (m["trainable_params"] < m["total_params"] / 2) == lora
        assert (result.output_dir / "reference" / "config.json").exists() == (head == "likelihood")
        rm = reward_model.RewardModel.load(result.output_dir, "cpu")
        assert isinstance(rm.model, reward_model.LikelihoodRewardModel) == (head == "likelihood")
        first = json.loads((result.output_dir / "eval_scores.jsonl").read_text().splitlines()[0])
        again = rm.score([first["prompt"]], [first["chosen"]])[0]
        assert again == pytest.approx(first["score_chosen"], abs=1e-4)
    with pytest.raises(StageError, match="head='sum'; accepted: likelihood, last_token"):
        reward.RewardConfig(head="sum")


def test_hh_transcripts_run_end_to_end_and_bad_rows_name_their_line(base_model, tmp_path):
    rows = []
    for r in _polite_rude_pairs(40, 2):
        prompt = f"\n\nHuman: Hello!\n\nAssistant: Hi, how can I help?\n\nHuman: {r['prompt']}\n\nAssistant: "
        rows.append({"chosen": prompt + r["chosen"], "rejected": prompt + r["rejected"]})
    hh = _write(tmp_path / "hh.jsonl", rows)
    result = reward.run(reward.RewardConfig(base_model=str(base_model), train_data=str(hh), max_steps=2, batch_size=8),
                        tmp_path / "run", progress=False)
    assert result.metrics["train_pairs"] == 36 and result.metrics["eval_pairs"] == 4  # 10 % held out for eval
    bad = _write(tmp_path / "bad.jsonl", rows[:2] + [{"chosen": rows[0]["chosen"],
                                                      "rejected": "\n\nHuman: Something else?\n\nAssistant: No."}])
    with pytest.raises(DataError, match=r"bad.jsonl:3: not a valid hh preference row .*share no user turn"):
        reward.run(reward.RewardConfig(base_model=str(base_model), train_data=str(bad)), tmp_path / "run2", progress=False)
    assert not (tmp_path / "run2" / "reward").exists()


def test_missing_base_model_says_what_to_do_and_writes_nothing(tmp_path):
    with pytest.raises(StageError, match="run SFT first"):
        reward.run(reward.RewardConfig(), tmp_path, progress=False)
    assert not any(tmp_path.iterdir())
    with pytest.raises(StageError, match="not a reward-model folder"):
        reward_model.RewardModel.load(tmp_path)


def test_length_balanced_micro_batches_give_the_steps_loss_with_less_padding(base_model, tmp_path):
    """A step's 16 pairs, sorted by length into micro-batches of different sizes (transformers'
    BatchRebalanceSampler), add up to exactly the loss of the 16 pairs in one batch, over fewer padded tokens."""
    from llmkit.tokenizer import load_chat_tokenizer

    config = reward.RewardConfig(base_model=str(base_model), batch_size=16, micro_batch_size=4, max_examples=64,
                                 center_rewards_coefficient=0.01)
    tokenizer = load_chat_tokenizer(base_model)
    train_rows, eval_rows, _ = reward.load_pairs(config, tmp_path)
    trainer = reward.build_trainer(config, tokenizer, base_model, train_rows, eval_rows, tmp_path)
    assert trainer.args.train_sampling_strategy == "batch_rebalance"
    step = list(trainer.get_train_dataloader().batch_sampler)[:4]  # the 4 micro-batches of the first step
    assert sum(len(m) for m in step) == 16 and len({len(m) for m in step}) > 1
    model = trainer.model

    def collate(indices):
        return {k: v.to(trainer.args.device) for k, v in
                trainer.data_collator([trainer.train_dataset[i] for i in indices]).items()}

    whole = collate([i for m in step for i in m])
    parts = [collate(m) for m in step]
    with torch.no_grad():
        one_batch = trainer.compute_loss(model.eval(), dict(whole)).item()  # TRL's loss: the mean over 16 pairs
        model.train()  # the model has no dropout: eval and train compute the same function
        summed = sum(trainer.compute_loss(model, dict(p)).item() for p in parts) / 4  # Trainer: / accumulation
    assert summed == pytest.approx(one_batch, rel=1e-5)
    assert sum(p["input_ids"].numel() for p in parts) < 0.9 * whole["input_ids"].numel()
