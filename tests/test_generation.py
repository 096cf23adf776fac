"""Generation (llmkit.generation): batched answers that stop at the end of turn, the log-probabilities of what
was sampled, and the probability of EOS where an answer ended."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit import sft
from llmkit.generation import chat_generate, generate, response_logprobs


def test_rollouts_stop_at_eos_and_use_the_kv_cache(base_model):
    tok = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    torch.manual_seed(0)
    r = generate(model, tok, ["Hello?", [{"role": "user", "content": "Where was Ada born?"}]], max_new_tokens=6)
    assert r.input_ids.shape == (2, r.n_prompt + r.mask.shape[1]) and r.mask.shape[1] <= 6
    for ids, m, ended in zip(r.input_ids[:, r.n_prompt:], r.mask, r.ended):
        real = ids[m.bool()].tolist()
        if ended:
            assert real[-1] == tok.eos_token_id and real.count(tok.eos_token_id) == 1
        assert (ids[~m.bool()] == tok.pad_token_id).all()
    # the log-probabilities recomputed by a forward pass are those generation sampled from (same positions)
    logp = response_logprobs(model, r.input_ids, r.attention_mask, r.n_prompt, 1.0)
    assert torch.isfinite(logp[r.mask.bool()]).all() and (logp[r.mask.bool()] < 0).all()


def test_chat_generate_reports_the_probability_of_eos_where_an_answer_ended(base_model, tmp_path):
    result = sft.run(sft.SFTConfig(base_model=str(base_model), **dict(max_steps=6, eval_every=3, batch_size=8, qa_limit=12)), tmp_path, progress=False)
    model = AutoModelForCausalLM.from_pretrained(result.output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    prompts = ["Where was Ada born?", "Tell me about Elmford."]
    answers = chat_generate(model, tokenizer, prompts, max_new_tokens=64, eos_probability=True)
    assert any(a["ended"] for a in answers)
    for prompt, answer in zip(prompts, answers):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
        ids = ids + tokenizer(answer["text"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            p_eos = model(torch.tensor([ids])).logits[0, -1].softmax(-1)[tokenizer.eos_token_id].item()
        if answer["ended"]:
            assert answer["eos_probability"] == pytest.approx(p_eos, abs=1e-4)
        else:
            assert answer["eos_probability"] is None
