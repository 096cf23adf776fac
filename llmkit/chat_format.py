"""Chat templates of any model family: which tokens are the assistant's, which token ends a turn, and a
template for a base model that has none.

llmkit's own template (`llmkit.tokenizer.CHAT_TEMPLATE`) wraps each answer in `{% generation %}` markers, which
is how transformers returns the assistant mask. Most families' templates have none. TRL patches the ones it
knows (Llama 3, Qwen2.5/3, Gemma, Phi-3, ...; `trl.chat_template_utils.get_training_chat_template`); for any
other template the mask is found **turn by turn**: the text the template writes for the conversation up to an
assistant turn's header (`add_generation_prompt=True`) is a prefix of the text with that turn, and what the turn
adds — the answer and its end-of-turn token, without the whitespace after it — is the assistant's:

    <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n | Hello<|im_end|> | \\n
    └────────── render(messages[:1], add_generation_prompt) ┘  └ assistant ┘

The characters map to tokens through the tokenizer's offsets, as transformers maps the markers' spans
(a token overlapping a span is in it), so on a template with markers both give the same mask (tested).

The **end-of-turn tokens** are what the template writes right after an answer (Llama 3: `<|eot_id|>`,
Gemma: `<end_of_turn>`, Phi-3: `<|end|>`, ChatML: `<|im_end|>`, Mistral: `</s>`), with the tokenizer's EOS and the
model's generation config's: generation stops at any of them.
"""

from __future__ import annotations

import re

from trl.chat_template_utils import get_training_chat_template

from llmkit.loaders import reject
from llmkit.runs import StageError
from llmkit.tokenizer import CHAT_TEMPLATE, EOS, IM_START

SAMPLE = [{"role": "user", "content": "Where was Ada born?"}, {"role": "assistant", "content": "In Elmford."},
          {"role": "user", "content": "And when?"}, {"role": "assistant", "content": "In 1961."}]


def has_generation_markers(template) -> bool:
    if isinstance(template, dict):
        template = template.get("default", "")
    return bool(template) and re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False, chat_template: str | None = None) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         chat_template=chat_template)


def assistant_spans(tokenizer, messages: list[dict], chat_template: str | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's text and the character spans of its assistant turns, found turn by turn (module doc):
    a turn's span starts where the template's text for the conversation up to its header ends, and ends after
    the answer and the special token that closes it. Raises StageError when the template renders earlier turns
    differently once a turn is added (not prefix-preserving), where turn-by-turn cannot work."""
    text = render(tokenizer, messages, chat_template=chat_template)
    specials = sorted({*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()}, key=len, reverse=True)
    special = re.compile("|".join(re.escape(t) for t in specials if t)) if specials else None
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        header = render(tokenizer, messages[:i], add_generation_prompt=True, chat_template=chat_template)
        answer = message["content"].strip()
        at = text.find(answer, len(header)) if text.startswith(header) else -1
        if at < 0:
            raise StageError("the chat template renders the conversation differently once a turn is added, so the "
                             "assistant's tokens cannot be found turn by turn: add {% generation %} ... "
                             "{% endgeneration %} markers around the assistant's text in the template")
        end = at + len(answer)
        close = special.search(text, end) if special else None
        if close and not text[end:close.start()].strip():
            end = close.end()  # the end-of-turn token: the model learns to stop
        if end > len(header):
            spans.append((len(header), end))
    return text, spans


def assistant_mask(tokenizer, messages: list[dict], chat_template: str | None = None) -> dict:
    """{"input_ids", "assistant_masks"} of a conversation: 1 on the assistant's tokens (the answer and its
    end-of-turn token), found turn by turn."""
    text, spans = assistant_spans(tokenizer, messages, chat_template)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(end > a and start < b for a, b in spans)) for start, end in enc["offset_mapping"]]
    return {"input_ids": list(enc["input_ids"]), "assistant_masks": mask}


def marker_mask(tokenizer, messages: list[dict], chat_template: str | None = None) -> dict:
    """The same from the template's `{% generation %}` markers (transformers' `return_assistant_tokens_mask`)."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                        chat_template=chat_template)
    return {"input_ids": list(out["input_ids"]), "assistant_masks": list(out["assistant_masks"])}


def training_template(tokenizer) -> str | None:
    """A template with generation markers for this tokenizer: its own where it has markers, TRL's patched copy
    where TRL knows the family, else None (the mask is then found turn by turn)."""
    if has_generation_markers(tokenizer.chat_template):
        return tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else tokenizer.chat_template["default"]

    try:
        return get_training_chat_template(tokenizer)
    except ValueError:
        return None


def masks(tokenizer, messages: list[dict]) -> dict:
    """The assistant mask by the best means the template offers: its markers (its own or TRL's patch for a known
    family), else turn by turn."""
    template = training_template(tokenizer)
    return marker_mask(tokenizer, messages, template) if template else assistant_mask(tokenizer, messages)


def special_ids(tokenizer) -> set[int]:
    """The ids of the tokenizer's special and added tokens (BOS, EOS, role markers, turn ends, ...)."""
    return set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())


def end_of_turn_ids(tokenizer, generation_config=None) -> list[int]:
    """The tokens that end an assistant turn: the special token that closes the answer's span (`assistant_mask`
    on a one-turn sample), the tokenizer's EOS and the generation config's `eos_token_id` (module doc)."""
    ids: list[int] = []
    if tokenizer.chat_template:
        try:
            enc = assistant_mask(tokenizer, SAMPLE[:2])
        except Exception:  # a template that cannot render the sample: the EOS alone
            enc = {"input_ids": [], "assistant_masks": []}
        trained = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
        if trained and trained[-1] in special_ids(tokenizer):
            ids.append(trained[-1])
    extra = getattr(generation_config, "eos_token_id", None)
    for token in [tokenizer.eos_token_id, *(extra if isinstance(extra, list) else [extra])]:
        if isinstance(token, int) and token not in ids:
            ids.append(token)
    return ids


def template_token_ids(tokenizer) -> list[int]:
    """The special tokens the chat template writes in a conversation (role markers, turn ends), with the EOS and
    without the BOS every pretrained model has seen: the rows SFT must train in a base model that has rarely or
    never seen them."""
    ids = set(tokenizer(render(tokenizer, SAMPLE), add_special_tokens=False)["input_ids"]) & special_ids(tokenizer)
    ids.add(tokenizer.eos_token_id)
    return sorted(i for i in ids if i is not None and i not in (tokenizer.unk_token_id, tokenizer.bos_token_id))


def accepts_system(tokenizer) -> bool:
    """Whether the chat template has a system role (Gemma 2's and Mistral's raise on one). Cached by template."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else repr(tokenizer.chat_template)
    if template not in _SYSTEM_ROLE:
        try:
            render(tokenizer, [{"role": "system", "content": "Be brief."}, *SAMPLE[:2]])
            _SYSTEM_ROLE[template] = True
        except Exception:
            _SYSTEM_ROLE[template] = False
    return _SYSTEM_ROLE[template]


_SYSTEM_ROLE: dict[str, bool] = {}


def fit_roles(tokenizer, prompt):
    """A prompt (a string, or messages) as `tokenizer`'s template takes it: unchanged, or with its system turns
    folded into the first user turn where the template has no system role (`fold_system`)."""
    if isinstance(prompt, str) or accepts_system(tokenizer):
        return prompt
    return fold_system(prompt)


def fit_pairs(tokenizer, rows: list[dict]) -> list[dict]:
    """Preference rows (a "prompt" with "chosen" and "rejected" answers, or whole conversations as "chosen" and
    "rejected") whose messages `fit_roles`."""
    if accepts_system(tokenizer):
        return rows
    return [{**row, **{k: fit_roles(tokenizer, row[k]) for k in ("prompt", "chosen", "rejected")
                       if isinstance(row.get(k), list)}} for row in rows]


def fold_system(messages: list[dict]) -> list[dict]:
    """A conversation for a template without a system role (Gemma 2, Mistral): the system text opens the first
    user turn, as those families' own docs advise."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest and rest[0]["role"] == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest


def check_template(tokenizer, path) -> None:
    """A clear error, before any training, when the template cannot render a plain conversation or the
    assistant's tokens cannot be found in it."""
    try:
        found = masks(tokenizer, SAMPLE)
    except StageError as e:
        raise StageError(f"{path}: {e}") from None
    except Exception as e:
        raise StageError(f"{path}: the chat template cannot render a user/assistant conversation ({e}); fix the "
                         "template or remove it (a model without one gets llmkit's ChatML template)") from None
    answer = tokenizer.decode([t for t, m in zip(found["input_ids"], found["assistant_masks"]) if m])
    if "In 1961." not in answer:
        raise StageError(f"{path}: the chat template's assistant tokens ({answer!r}) do not hold the answer")


def add_chatml(tokenizer, model=None) -> list[str]:
    """Give a base model without a chat template llmkit's ChatML template (`llmkit.tokenizer.CHAT_TEMPLATE`, with
    generation markers) and its special tokens, as TRL's chat-format helpers do; the model's embeddings grow to
    the new vocabulary (new rows: the mean of the old ones). Returns the tokens added."""
    vocab = tokenizer.get_vocab()
    new = [t for t in (IM_START, EOS) if t not in vocab]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    tokenizer.chat_template = CHAT_TEMPLATE if tokenizer.bos_token else CHAT_TEMPLATE.replace("{{ bos_token }}", "")
    if model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return new


def stop_at_end_of_turn(tokenizer, model=None) -> list[int]:
    """Make the end-of-turn token the tokenizer's EOS (Llama 3: <|eot_id|> instead of <|end_of_text|>; TRL does
    the same when it sets up a chat format), so that every generator — TRL's GRPO and RLOO, PPO, the chat app,
    other tools loading the saved model — stops where an answer ends. A tokenizer without a pad token gets the old
    EOS as pad. The model's generation config stops at every end-of-turn token. Returns those ids."""
    ids = end_of_turn_ids(tokenizer, getattr(model, "generation_config", None))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if ids and ids[0] != tokenizer.eos_token_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(ids[0])
    if model is not None and getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = ids if len(ids) > 1 else ids[0]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return ids


def tokenize_conversations(tokenizer, rows: list[dict], rejects=None, source: str = "conversations") -> list[dict]:
    """{"input_ids", "assistant_masks"} of each {"messages": [...]} row, the mask by `masks`' means; system turns
    fold into the first user turn where the template has no system role. A row the template cannot render, or
    with no assistant token, goes to `rejects` (a `llmkit.loaders.Rejects`; None: it stops the stage)."""
    fold = not accepts_system(tokenizer)
    template = training_template(tokenizer)
    out = []
    for n, row in enumerate(rows, 1):
        messages = fold_system(row["messages"]) if fold else row["messages"]
        try:
            enc = marker_mask(tokenizer, messages, template) if template else assistant_mask(tokenizer, messages)
        except Exception as e:  # the template's own raise_exception (roles that do not alternate, ...)
            reject(rejects, f"{source} #{n}", f"the chat template cannot render it: {e}")
            continue
        if 1 not in enc["assistant_masks"]:
            reject(rejects, f"{source} #{n}", "no assistant answer to learn")
            continue
        out.append(enc)
    return out
