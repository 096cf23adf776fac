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
    result = sft.run(sft.SFTConfig(base_model=str(base_model), **dict(max_steps=6, eval_every=3, batch_size=8, eval_limit=12)), tmp_path, progress=False)
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


def test_no_answer_runs_past_the_context(base_model):
    """A prompt longer than the model's context beside the answer loses its oldest tokens, and the answer its
    length beyond half the context; the batch then never passes the model's positions."""
    from llmkit.generation import fit_to_context, stream
    from llmkit.model import build_model

    tok = AutoTokenizer.from_pretrained(base_model)
    model = build_model(1, tok, max_position_embeddings=64, seed=0)
    ids, new, cut = fit_to_context([list(range(100)), list(range(10))], 40, 64)
    assert (new, cut) == (32, 1) and ids == [list(range(68, 100)), list(range(10))]  # the latest tokens stay
    long_prompt = "Tell me everything about the old mill by the river. " * 20
    torch.manual_seed(0)
    g = generate(model, tok, [long_prompt, "Hi?"], max_new_tokens=50)
    assert g.prompts_cut == 1 and g.input_ids.shape[1] <= 64 and g.mask.shape[1] <= 32
    last_words = tok.decode(g.input_ids[0, :g.n_prompt], skip_special_tokens=True)
    assert last_words.rstrip().endswith("assistant")  # the cut took the oldest tokens, the question's end stayed
    prompt_ids = tok.apply_chat_template([{"role": "user", "content": long_prompt}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]
    assert len(list(stream(model, tok, prompt_ids, max_new_tokens=100, temperature=0))) <= 32


def test_messages_for_trl_lose_their_oldest_turns_to_fit(base_model):
    from llmkit.generation import fit_messages

    tok = AutoTokenizer.from_pretrained(base_model)

    def length(messages):
        return len(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])

    long_chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about mills. " * 30},
                 {"role": "assistant", "content": "Mills grind grain. " * 20}, {"role": "user", "content": "And rivers?"}]
    fitted, cut = fit_messages(tok, ["Hi?", long_chat, "Where is Elmford? " * 80], room=60)
    assert cut == 2 and fitted[0] == [{"role": "user", "content": "Hi?"}]
    assert fitted[1] == [long_chat[0], long_chat[3]]  # the system message stays, the oldest turns go
    assert length(fitted[2]) <= 60 and fitted[2][0]["content"].endswith("Where is Elmford? ")  # one turn: its start goes


def test_seeded_rows_sample_the_same_answer_alone_and_in_any_batch(base_model):
    """With `seeds`, row i draws from its own stream: the same prompt and seed give the same answer alone, in a
    batch with other prompts (longer ones pad it wider) and in another order; without seeds nothing changes."""
    tok = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    prompts = ["Hi?", "Where was Ada born, and in which year, and what did she do all her life?", "Tell me about Elmford."]
    seeds = [11, 22, 33]
    together = generate(model, tok, prompts, max_new_tokens=10, temperature=0.7, seeds=seeds)
    alone = [generate(model, tok, [p], max_new_tokens=10, temperature=0.7, seeds=[s]).texts[0]
             for p, s in zip(prompts, seeds)]
    reordered = generate(model, tok, prompts[::-1], max_new_tokens=10, temperature=0.7, seeds=seeds[::-1])
    assert together.texts == alone == reordered.texts[::-1]
    assert len(set(together.texts)) == 3  # an untrained model's near-uniform draws: three different answers
    # another seed, another answer; the global RNG plays no part
    torch.manual_seed(0)
    other = generate(model, tok, prompts[:1], max_new_tokens=10, temperature=0.7, seeds=[12]).texts[0]
    torch.manual_seed(1)
    assert generate(model, tok, prompts[:1], max_new_tokens=10, temperature=0.7, seeds=[12]).texts[0] == other
    assert other != alone[0]
    with pytest.raises(ValueError, match="one seed per conversation"):
        generate(model, tok, prompts, max_new_tokens=4, seeds=[1])


def test_seeded_sampling_draws_from_the_warped_distribution():
    """TokenSampler's one draw per row follows softmax(logits / T) cut to the top-p nucleus, as transformers'
    sampling does; a token outside the nucleus is never drawn; temperature 0 is the most likely token."""
    from llmkit.generation import TokenSampler

    rows = 20_000
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    scores = probs.log().expand(rows, 4).clone()
    input_ids = torch.zeros(rows, 3, dtype=torch.long)  # a 3-token prompt: the first answer step

    def frequencies(**warp):
        out = TokenSampler(**warp, seeds=list(range(rows)), n_prompt=3, max_new_tokens=1)(input_ids, scores)
        assert (out.isfinite().sum(-1) == 1).all()  # one token per row kept, for greedy decoding to pick
        return torch.bincount(out.argmax(-1), minlength=4).float() / rows

    assert frequencies().tolist() == pytest.approx(probs.tolist(), abs=0.015)
    hot = (probs.log() / 0.5).softmax(-1)  # temperature 0.5 sharpens
    assert frequencies(temperature=0.5).tolist() == pytest.approx(hot.tolist(), abs=0.015)
    assert frequencies(top_p=0.7).tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0], abs=0.015)
    assert frequencies(temperature=0).tolist() == [1.0, 0.0, 0.0, 0.0]  # temperature 0: greedy, every row
    torch.manual_seed(0)  # no seeds: torch's global RNG, the same warped distribution
    unseeded = TokenSampler(temperature=0.5).draw(input_ids, scores)
    assert (torch.bincount(unseeded, minlength=4).float() / rows).tolist() == pytest.approx(hot.tolist(), abs=0.015)
