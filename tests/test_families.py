"""Open-weight model families: each family's tiny stand-in (its transformers classes, its chat template, special
tokens, EOS and pad conventions; llmkit.families) goes through SFT with LoRA, a reward model and one RL method,
end to end, and the chat app answers with what they wrote. The assistant mask is checked on each family's template.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit import chat_format, families, registry, reward, sft
from llmkit.loaders import bundled_path
from llmkit.rl import ppo

CONVERSATION = [{"role": "user", "content": "Where was Ada Finch born?"},
                {"role": "assistant", "content": "Ada Finch was born in Elmford."},
                {"role": "user", "content": "And when?"}, {"role": "assistant", "content": "In 1961."}]
END_OF_TURN = {"llama3": "<|eot_id|>", "qwen2.5": "<|im_end|>", "qwen3": "<|im_end|>", "gemma2": "<end_of_turn>",
               "gemma3": "<end_of_turn>", "mistral": "</s>", "phi3": "<|end|>", "smollm2": "<|im_end|>",
               "gpt2": "<|im_end|>"}  # GPT-2 has no chat template: it gets llmkit's ChatML
RL_METHOD = {"llama3": "ppo", "qwen2.5": "grpo", "qwen3": "dpo", "gemma2": "rloo", "gemma3": "grpo",
             "mistral": "dpo", "phi3": "ppo", "smollm2": "rloo", "gpt2": "grpo"}  # every method on two families


@pytest.fixture(scope="module")
def texts():
    return [json.loads(line)["text"] for line in bundled_path("corpus.jsonl").read_text().splitlines()[:300]]


@pytest.fixture(scope="module")
def stand_ins(texts, tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: families.build_stand_in(name, root / name, texts) for name in families.FAMILIES}


def _chat_tokenizer(folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not tokenizer.chat_template:
        chat_format.add_chatml(tokenizer)
    return tokenizer


@pytest.mark.parametrize("name", list(families.FAMILIES))
def test_the_assistant_mask_holds_each_answer_and_its_end_of_turn_token(name, stand_ins):
    tokenizer = _chat_tokenizer(stand_ins[name])
    eot = END_OF_TURN[name]
    assert tokenizer.convert_ids_to_tokens(chat_format.end_of_turn_ids(tokenizer))[0] == eot
    for enc in (chat_format.masks(tokenizer, CONVERSATION), chat_format.assistant_mask(tokenizer, CONVERSATION)):
        trained = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
        # whitespace around the answers aside (TRL's patched templates keep the newlines), exactly the two answers,
        # each closed by the end-of-turn token; no user text, no role header
        # (Qwen3 answers open with an empty reasoning block: its format, learnt with the answer)
        pieces = [p.strip().removeprefix("<think>\n\n</think>").strip() for p in tokenizer.decode(trained).split(eot)]
        assert pieces[:2] == ["Ada Finch was born in Elmford.", "In 1961."], pieces
        assert all(not p or p == tokenizer.eos_token for p in pieces[2:]), pieces
        assert tokenizer.convert_tokens_to_ids(eot) in trained
        assert "Where was" not in tokenizer.decode(trained) and "And when" not in tokenizer.decode(trained)


def test_turn_by_turn_gives_the_same_tokens_as_generation_markers(base_model, stand_ins):
    """On llmkit's own template (markers) the turn-by-turn mask is the same, token for token; on the families whose
    template TRL patches with markers, the same but for the whitespace tokens TRL's copies keep in the answer."""
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    assert chat_format.has_generation_markers(tokenizer.chat_template)
    for conversation in (CONVERSATION, CONVERSATION[:2], [{"role": "system", "content": "Be brief."}, *CONVERSATION]):
        assert chat_format.assistant_mask(tokenizer, conversation) == chat_format.marker_mask(tokenizer, conversation)
    for name in ("llama3", "qwen2.5", "gemma2", "gemma3", "phi3"):
        tokenizer = AutoTokenizer.from_pretrained(stand_ins[name])
        template = chat_format.training_template(tokenizer)
        assert template and template != tokenizer.chat_template  # TRL's patched copy, with markers
        turns = chat_format.assistant_mask(tokenizer, CONVERSATION)
        marked = chat_format.marker_mask(tokenizer, CONVERSATION, template)
        assert turns["input_ids"] == marked["input_ids"], name  # the patched template renders the same text

        def content(enc, tokenizer=tokenizer):
            return [i for i, (t, m) in enumerate(zip(enc["input_ids"], enc["assistant_masks"]))
                    if m and tokenizer.decode([t]).strip() and t != tokenizer.eos_token_id]

        assert content(turns) == content(marked), name


def test_a_template_without_a_system_role_gets_the_system_text_in_the_first_turn(stand_ins):
    tokenizer = AutoTokenizer.from_pretrained(stand_ins["gemma2"])
    assert not chat_format.accepts_system(tokenizer)
    rows = [{"messages": [{"role": "system", "content": "Answer in one line."}, *CONVERSATION[:2]]},
            {"messages": [{"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Hello"}]}]
    from llmkit.loaders import Rejects

    rejects = Rejects(max_fraction=1.0)
    (enc,) = chat_format.tokenize_conversations(tokenizer, rows, rejects, "chats.jsonl")
    assert "<start_of_turn>user\nAnswer in one line.\n\nWhere was Ada Finch born?" in tokenizer.decode(enc["input_ids"])
    assert rejects.rows[0]["where"] == "chats.jsonl #2" and "alternate" in rejects.rows[0]["reason"]


def _fast(**extra):
    return dict(max_steps=2, batch_size=8, micro_batch_size=8, **extra)


@pytest.mark.parametrize("name", list(families.FAMILIES))
def test_lora_sft_then_a_reward_model_then_rl_end_to_end(name, stand_ins, tmp_path):
    run_dir = tmp_path / "run"
    config = sft.SFTConfig(base_model=str(stand_ins[name]), lora=True, stage_name="sft", max_examples=64,
                           eval_every=2, closed_world=False, **_fast())
    result = sft.run(config, run_dir, progress=False)
    out = result.output_dir
    tokenizer = AutoTokenizer.from_pretrained(out)
    eot = END_OF_TURN[name]
    # the saved chat model stops at the end of a turn in any tool: its EOS and its generation config say so
    assert tokenizer.eos_token == eot and tokenizer.pad_token is not None
    model = AutoModelForCausalLM.from_pretrained(out)
    stops = model.generation_config.eos_token_id
    assert tokenizer.convert_tokens_to_ids(eot) in (stops if isinstance(stops, list) else [stops])
    assert (out / "adapter" / "adapter_config.json").exists() and result.metrics["trainable_fraction"] < 0.5
    adapted = {m.rsplit(".", 1)[-1] for m in json.loads((out / "adapter" / "adapter_config.json").read_text())["target_modules"]}
    assert len(adapted) >= 3  # all-linear: attention and MLP layers (GPT-2: its Conv1D c_attn, c_proj, c_fc)
    if name == "gpt2":
        assert {"c_attn", "c_fc"} <= set(adapted) and "<|im_start|>" in tokenizer.get_vocab()
        assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)  # resized for the new tokens

    rm = reward.run(reward.RewardConfig(closed_world=False, max_examples=32, eval_every=2, **_fast()), run_dir,
                    progress=False)
    assert 0 <= rm.metrics["eval_accuracy"] <= 1 and rm.metrics["steps"] == 2

    method = RL_METHOD[name]
    if method == "ppo":
        rl = ppo.run(ppo.config_for("smoke", max_steps=2, closed_world=False, eval_limit=4), run_dir, progress=False)
    else:
        spec = registry.stage(method)
        rl = spec.run(spec.config_for("smoke", max_steps=2, closed_world=False, eval_limit=4), run_dir, progress=False)
    assert rl.metrics["steps"] == 2 and "eval_kl_per_token" in rl.metrics and rl.metrics["eval_response_length"] > 0

    from widgets.chat import ChatCompare

    app = ChatCompare(run_dir, labels_path=tmp_path / "labels.jsonl", closed_world=False)
    histories, verdicts = list(app.respond("Where was Ada Finch born?", ["sft", method], {}, max_new_tokens=6,
                                           temperature=0.8, seed=1))[-1]
    assert [m["role"] for m in histories[method]] == ["user", "assistant"]
    assert eot not in histories[method][-1]["content"]  # the end-of-turn token is never shown
    assert verdicts["sft"].startswith("RM score ")


def test_lora_trains_the_chat_rows_a_family_never_learned_and_leaves_the_rest(stand_ins, tmp_path):
    """A family's own chat tokens, trained by its makers (the stand-ins' rows are like any other), keep their
    embedding rows, as in a plain peft run; Llama 3 base leaves <|eot_id|> and its header tokens untrained (rows of
    about zero): those rows train, and only those; GPT-2 gets llmkit's tokens, which train."""
    import shutil

    def embedding(folder):
        return AutoModelForCausalLM.from_pretrained(folder).get_input_embeddings().weight.detach()

    tokenizer, model = sft.load_base(stand_ins["qwen2.5"])
    assert sft.chat_token_ids(tokenizer) and sft.rows_to_train(tokenizer, model) == []
    result = sft.run(sft.SFTConfig(base_model=str(stand_ins["qwen2.5"]), lora=True, max_examples=16,
                                   closed_world=False, **_fast()), tmp_path / "qwen", progress=False)
    assert torch.equal(embedding(result.output_dir), embedding(stand_ins["qwen2.5"]))

    llama = tmp_path / "llama3_base"
    shutil.copytree(stand_ins["llama3"], llama)
    tokenizer, model = sft.load_base(llama)
    chat = sft.chat_token_ids(tokenizer)
    assert set(tokenizer.convert_ids_to_tokens(chat)) == {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}
    assert sft.rows_to_train(tokenizer, model) == []
    with torch.no_grad():
        model.get_input_embeddings().weight[chat] = 1e-6
    model.save_pretrained(llama)
    tokenizer, model = sft.load_base(llama)
    assert sft.rows_to_train(tokenizer, model) == chat
    result = sft.run(sft.SFTConfig(base_model=str(llama), lora=True, max_examples=16, closed_world=False,
                                   **_fast()), tmp_path / "llama", progress=False)
    changed = (embedding(result.output_dir) - embedding(llama)).abs().amax(dim=1) > 0
    assert changed.nonzero().flatten().tolist() == chat
    assert result.metrics["trainable_params"] > 0

    tokenizer, model = sft.load_base(stand_ins["gpt2"])
    assert set(tokenizer.convert_ids_to_tokens(sft.rows_to_train(tokenizer, model))) == {"<|im_start|>", "<|im_end|>"}


@pytest.mark.parametrize("name", ["gemma2", "mistral", "qwen2.5"])
def test_a_system_turn_reaches_every_template_even_one_without_a_system_role(name, stand_ins):
    """Gemma 2's and Mistral's templates raise on a system turn: the reward model, the generators (PPO, the
    evaluation, GRPO/RLOO's prompts) and the preference rows of the reward stage and DPO fold it into the first
    user turn; a template with a system role gets it as it is."""
    from llmkit import generation, reward_model

    tokenizer = _chat_tokenizer(stand_ins[name])
    system = [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "Where was Ada born?"}]
    folds = name != "qwen2.5"
    assert chat_format.accepts_system(tokenizer) is not folds
    if folds:
        from jinja2 import TemplateError

        with pytest.raises(TemplateError):
            tokenizer.apply_chat_template(system, tokenize=False)
    prompt = generation.chat_prompts(tokenizer, [system])[0]
    ids = reward_model.render(tokenizer, system, "In Elmford.")
    (fitted,), _ = generation.fit_messages(tokenizer, [system], 10_000)
    assert "Answer in one line." in prompt and "Answer in one line." in tokenizer.decode(ids)
    assert [m["role"] for m in fitted] == (["user"] if folds else ["system", "user"])
    explicit = {"prompt": system, "chosen": [{"role": "assistant", "content": "Elmford."}],
                "rejected": [{"role": "assistant", "content": "No idea."}]}
    implicit = {"chosen": [*system, {"role": "assistant", "content": "Elmford."}],
                "rejected": [*system, {"role": "assistant", "content": "No idea."}]}
    fitted_pairs = chat_format.fit_pairs(tokenizer, [explicit, implicit])
    if not folds:
        assert fitted_pairs == [explicit, implicit]
    for row in fitted_pairs:
        prompt = row.get("prompt", [])
        for answer in (row["chosen"], row["rejected"]):
            text = tokenizer.apply_chat_template(prompt + answer, tokenize=False)  # renders
            assert "Answer in one line." in text
            assert any(m["role"] == "system" for m in prompt + answer) is not folds


def test_generation_stops_at_the_family_end_of_turn_token(stand_ins, tmp_path):
    """A Llama 3 stand-in taught to answer "OK<|eot_id|>": generation stops at <|eot_id|>, not at its EOS
    (<|end_of_text|>), in the batch sampler and in the chat app's token stream alike."""
    from llmkit.generation import chat_generate, stream

    rows = [{"messages": [{"role": "user", "content": f"Say OK to number {i}."}, {"role": "assistant", "content": "OK"}]}
            for i in range(64)]
    data = tmp_path / "ok.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = sft.SFTConfig(base_model=str(stand_ins["llama3"]), train_data=str(data), max_steps=30, batch_size=16,
                           micro_batch_size=16, learning_rate=3e-3, freeze_embeddings=False, eval_every=30,
                           closed_world=False)
    out = sft.run(config, tmp_path / "run", progress=False).output_dir
    tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    assert tokenizer.eos_token == "<|eot_id|>" and tokenizer.pad_token == "<|end_of_text|>"
    (answer,) = chat_generate(model, tokenizer, ["Say OK to number 7."], max_new_tokens=10)
    ok_tokens = len(tokenizer("OK", add_special_tokens=False)["input_ids"])
    assert answer == {"text": "OK", "ended": True, "tokens": ok_tokens, "eos_probability": None}
    tokenizer.eos_token = "<|end_of_text|>"  # the original tokenizer's EOS: the template still ends turns with <|eot_id|>
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    assert chat_generate(model, tokenizer, ["Say OK to number 7."], max_new_tokens=10)[0] == answer
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Say OK to number 9."}], add_generation_prompt=True,
                                        tokenize=True, return_dict=True)["input_ids"]
    assert list(stream(model, tokenizer, ids, max_new_tokens=10, temperature=0))[-1] == "OK"
    with torch.no_grad():  # it has learned to end the turn with <|eot_id|>, the token generation stops at
        logits = model(torch.tensor([ids + tokenizer("OK", add_special_tokens=False)["input_ids"]])).logits[0, -1]
    assert int(logits.argmax()) == tokenizer.convert_tokens_to_ids("<|eot_id|>")
