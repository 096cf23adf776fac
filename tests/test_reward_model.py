"""Reward models at inference (llmkit.reward_model): the scorer RL and the apps load, both heads, and where a
likelihood reward model's score comes from."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from llmkit import reward_model


def test_score_reads_the_last_real_token_whatever_the_padding(base_model, tmp_path):
    """A response scores the same alone and in a batch beside a much longer one (padding is never read), and the
    same as the model's own forward pass on the chat-rendered conversation."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model.config.pad_token_id = tokenizer.pad_token_id
    rm = reward_model.RewardModel(model.eval(), tokenizer)
    alone = rm.score(["Where was Ada born?"], ["In Elmford."])[0]
    batch = rm.score(["Where was Ada born?", "Tell me everything."], ["In Elmford.", "A long answer " * 30])
    assert batch[0] == pytest.approx(alone, abs=1e-5)
    ids = reward_model.render(tokenizer, "Where was Ada born?", "In Elmford.")
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
    model = reward_model.LikelihoodRewardModel(classifier, reference, reward_model.answer_header(tokenizer), gate_bias)
    return reward_model.RewardModel(model.eval(), tokenizer), classifier, reference


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
    ids = reward_model.render(tokenizer, prompt, answer)
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
    parts = reward_model.explain(rm, "Who is Bo?", "Bo is a baker.")  # where the score comes from, token by token
    assert parts["score"] == pytest.approx(trained[1], abs=1e-4)
    assert "".join(t["token"] for t in parts["tokens"]).startswith("Bo is a baker.<|im_end|>")
    assert all(t["weight"] > 0 and t["logp"] <= 0 for t in parts["tokens"])
    assert len({round(t["weight"], 6) for t in parts["tokens"]}) > 1
    rm.model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    loaded = reward_model.RewardModel.load(tmp_path / "rm", "cpu")
    assert isinstance(loaded.model, reward_model.LikelihoodRewardModel)
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
