"""Reward stage: a real TRL RewardTrainer run, the scorer RL reuses, labels from the app, HH data, bad input."""

import json
import random

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from llmkit import reward
from llmkit.labels import LabelStore, make_item
from llmkit.loaders import DataError

FAST = dict(max_steps=4, eval_every=2, batch_size=8, max_examples=64, oracle_prompts=6)


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
    result = reward.run(reward.RewardConfig(base_model=str(base_model), **FAST), tmp_path, progress=False)
    out = result.output_dir
    assert out == tmp_path / "reward" and not (tmp_path / ".reward.partial").exists()
    m = result.metrics
    assert m["train_pairs"] == 64 + 2 and m["train_pairs_from_labels"] == 2  # the tie is left out
    assert m["steps"] == 4 and 0 <= m["eval_accuracy"] <= 1 and m["eval_pairs"] == 300
    assert 0 <= m["oracle_agreement"] <= 1 and m["oracle_decided_pairs"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1
    scored = [json.loads(line) for line in (out / "eval_scores.jsonl").read_text().splitlines()]
    assert len(scored) == 300 and {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"} <= set(scored[0])
    assert (out / "oracle_pairs.jsonl").exists() and (out / "log.jsonl").exists()
    assert reward.run(reward.RewardConfig(base_model=str(base_model)), tmp_path, progress=False).reused


def test_score_reads_the_last_real_token_whatever_the_padding(base_model, tmp_path):
    """A response scores the same alone and in a batch beside a much longer one (padding is never read), and the
    same as the model's own forward pass on the chat-rendered conversation."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model.config.pad_token_id = tokenizer.pad_token_id
    rm = reward.RewardModel(model.eval(), tokenizer)
    alone = rm.score(["Where was Ada born?"], ["In Elmford."])[0]
    batch = rm.score(["Where was Ada born?", "Tell me everything."], ["In Elmford.", "A long answer " * 30])
    assert batch[0] == pytest.approx(alone, abs=1e-5)
    ids = reward.render(tokenizer, "Where was Ada born?", "In Elmford.")
    assert tokenizer.decode(ids).endswith("In Elmford.<|im_end|>\n")
    with torch.no_grad():
        direct = model(torch.tensor([ids])).logits[0, 0].item()
    assert direct == pytest.approx(alone, abs=1e-5)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        rm.score(["a", "b"], ["c"])


def _likelihood_rm(base_model, gate_bias=-1.0):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    classifier = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
    classifier.config.pad_token_id = tokenizer.pad_token_id
    reference = AutoModelForCausalLM.from_pretrained(base_model)
    model = reward.LikelihoodRewardModel(classifier, reference, reward.answer_header(tokenizer), gate_bias)
    return reward.RewardModel(model.eval(), tokenizer), classifier, reference


def test_likelihood_head_adds_the_references_log_probabilities_of_the_answer_tokens(base_model, tmp_path):
    """r = last-token head + softplus(gate) · Σ log p_reference over the answer's tokens (its end-of-turn included,
    the prompt and the assistant header not): checked against a direct forward pass of the reference, alone and
    padded in a batch; and a saved likelihood reward model loads back with the same scores."""
    from transformers import AutoTokenizer

    rm, classifier, reference = _likelihood_rm(base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    prompt, answer = "Where was Ada born?", "In Elmford."
    prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                               add_generation_prompt=True, return_dict=True)["input_ids"]
    ids = reward.render(tokenizer, prompt, answer)
    assert ids[:len(prompt_ids)] == list(prompt_ids) and len(ids) > len(prompt_ids) + 2
    with torch.no_grad():
        logp = reference(torch.tensor([ids])).logits[0].log_softmax(-1)
        answer_logp = [logp[t - 1, ids[t]].item() for t in range(len(prompt_ids), len(ids))]
        head = classifier(torch.tensor([ids])).logits[0, 0].item()
    weight = torch.nn.functional.softplus(torch.tensor(-1.0)).item()  # the gate starts at its bias everywhere
    for floor in (-100.0, -7.8):  # no floor in reach; a floor some of this random model's tokens fall under
        rm.model.logp_floor = floor
        expected = head + weight * sum(max(x, floor) for x in answer_logp)
        alone = rm.score([prompt], [answer])[0]
        batch = rm.score([prompt, "Tell me everything."], [answer, "A long answer " * 30])
        assert alone == pytest.approx(expected, abs=1e-4) and batch[0] == pytest.approx(alone, abs=1e-4)
    assert min(answer_logp) < -7.8 < max(answer_logp)
    torch.nn.init.normal_(rm.model.gate.weight, std=0.5)  # a trained gate: per-token weights
    trained = rm.score([prompt, "Who is Bo?"], [answer, "Bo is a baker."])
    parts = reward.explain(rm, "Who is Bo?", "Bo is a baker.")  # where the score comes from, token by token
    assert parts["score"] == pytest.approx(trained[1], abs=1e-4)
    assert "".join(t["token"] for t in parts["tokens"]).startswith("Bo is a baker.<|im_end|>")
    assert all(t["weight"] > 0 and t["logp"] <= 0 for t in parts["tokens"])
    assert len({round(t["weight"], 6) for t in parts["tokens"]}) > 1
    rm.model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    loaded = reward.RewardModel.load(tmp_path / "rm", "cpu")
    assert isinstance(loaded.model, reward.LikelihoodRewardModel)
    assert loaded.score([prompt, "Who is Bo?"], [answer, "Bo is a baker."]) == pytest.approx(trained, abs=1e-5)
    assert not any(p.requires_grad for p in loaded.model.reference.parameters())


def test_reference_cache_gives_the_same_scores_and_runs_only_new_rows_through_the_reference(base_model):
    """While the reward stage trains, a likelihood RM keeps each sequence's reference log-probabilities: a pair
    seen before (the next epoch, the next evaluation) costs no second reference pass, and scores do not change."""
    rm, _, reference = _likelihood_rm(base_model)
    torch.nn.init.normal_(rm.model.gate.weight, std=0.5)
    prompts, answers = ["Where was Ada born?", "Who is Bo?"], ["In Elmford.", "Bo is a baker born in Selbury in 1950."]
    plain = rm.score(prompts, answers)
    rows_seen = []
    hook = reference.register_forward_hook(lambda module, args, kwargs, out: rows_seen.append(kwargs["input_ids"].shape[0]),
                                           with_kwargs=True)
    try:
        rm.model.reference_cache = {}
        first = rm.score(prompts, answers)
        again = rm.score(prompts, answers)
        assert rows_seen == [2]  # the second time, nothing went through the reference
        mixed = rm.score(["Who is Bo?", "What does Cy do?"], [answers[1], "Cy is a painter."])
        assert rows_seen == [2, 1]  # only the new pair did
    finally:
        hook.remove()
        rm.model.reference_cache = None
    assert first == pytest.approx(plain, abs=1e-5) and again == pytest.approx(plain, abs=1e-5)
    assert mixed[0] == pytest.approx(plain[1], abs=1e-5)
    assert mixed[1] == pytest.approx(rm.score(["What does Cy do?"], ["Cy is a painter."])[0], abs=1e-5)


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
        rm = reward.RewardModel.load(result.output_dir, "cpu")
        assert isinstance(rm.model, reward.LikelihoodRewardModel) == (head == "likelihood")
        first = json.loads((result.output_dir / "eval_scores.jsonl").read_text().splitlines()[0])
        again = rm.score([first["prompt"]], [first["chosen"]])[0]
        assert again == pytest.approx(first["score_chosen"], abs=1e-4)
    with pytest.raises(reward.RewardError, match="head='sum': accepted heads are likelihood, last_token"):
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
    with pytest.raises(DataError, match=r"bad.jsonl:3: not a valid hh preference row .*share every turn"):
        reward.run(reward.RewardConfig(base_model=str(base_model), train_data=str(bad)), tmp_path / "run2", progress=False)
    assert not (tmp_path / "run2" / "reward").exists()


def test_missing_base_model_says_what_to_do_and_writes_nothing(tmp_path):
    with pytest.raises(reward.RewardError, match="run SFT first"):
        reward.run(reward.RewardConfig(), tmp_path, progress=False)
    assert not any(tmp_path.iterdir())
    with pytest.raises(reward.RewardError, match="not a reward-model folder"):
        reward.RewardModel.load(tmp_path)


def test_length_balanced_micro_batches_give_the_steps_loss_with_less_padding(base_model, tmp_path):
    """A step's 16 pairs, sorted by length into micro-batches of different sizes (transformers'
    BatchRebalanceSampler), add up to exactly the loss of the 16 pairs in one batch, over fewer padded tokens."""
    from llmkit.sft import load_chat_tokenizer

    config = reward.RewardConfig(base_model=str(base_model), batch_size=16, micro_batch_size=4, max_examples=64,
                                 center_rewards_coefficient=0.01)
    tokenizer = load_chat_tokenizer(base_model, tmp_path)
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
