"""Chat-data format adapters: the common instruction-tuning formats, read into TRL's `messages` format.

    messages           {"messages": [{"role": "user", "content": …}, {"role": "assistant", "content": …}]}
    alpaca             {"instruction": …, "input": … (optional), "output": …}
    sharegpt           {"conversations": [{"from": "human", "value": …}, {"from": "gpt", "value": …}]}
    prompt_completion  {"prompt": …, "completion": …}  (strings, or lists of messages)
    hh                 {"chosen": "\\n\\nHuman: …\\n\\nAssistant: …"} (Anthropic HH-RLHF), or {"text": <transcript>}
    self_instruct      {"instruction": …, "instances": [{"input": …, "output": …}, …]}  (one conversation per instance)

`read_conversations(path)` detects the format from the first row (or takes `data_format=`) and converts every
row; a row it cannot read raises a DataError naming the file, the line and the fields it expected. Preference
pairs (`read_preferences`) and prompts for RL (`read_prompts`) are read the same way, and a prompt anywhere in
llmkit is a user message (a string) or a list of messages: `as_messages` makes it the latter, `prompt_text`
the text shown for it.
"""

from __future__ import annotations

import re
from pathlib import Path

from llmkit.loaders import DataError, ReadStats, Rejects, bundled_path, iter_records, reject
from llmkit.options import CHAT_FORMATS, PREFERENCE_FORMATS
from llmkit.verifier import ANSWER_FIELDS, expected_answer

ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
         "chatgpt": "assistant", "bot": "assistant", "model": "assistant"}
EXPECTED = {
    "messages": "`messages`: a list of {role, content} ending with an assistant turn",
    "alpaca": "`instruction` and `output` (and optionally `input`, `system`)",
    "sharegpt": "`conversations`: a list of {from, value} with from = human/gpt (or user/assistant/system)",
    "prompt_completion": "`prompt` and `completion`",
    "hh": "`chosen` (or `text`): a transcript of '\\n\\nHuman: …' and '\\n\\nAssistant: …' turns",
    "self_instruct": "`instruction` and `instances`: a list of {input, output}",
}
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


def as_messages(prompt) -> list[dict]:
    """A prompt as a list of messages: a string is one user message."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def prompt_text(prompt) -> str:
    """The text shown for a prompt: the message itself, or every turn with its role when there are several."""
    messages = as_messages(prompt)
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def read_prompts(path: str | Path, rejects: Rejects | None = None, limit: int | None = None) -> list:
    """Prompts for RL and sampling, from rows with a `prompt` (a string or a list of messages), or from any
    conversation format `read_conversations` reads — the prompt is the conversation up to its last assistant
    turn — or from instructions alone (`instruction`, with an optional `input`). Rows that hold none go to
    `rejects` (None: the first one stops the read). `limit`: stop after that many."""
    out = []
    for row, where in _rows(path, rejects):
        if limit is not None and len(out) >= limit:
            break
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if isinstance(prompt, str) and prompt.strip() or isinstance(prompt, list) and prompt:
            out.append(prompt)
            continue
        fmt = detect_format(row)
        try:
            if fmt is not None:
                messages = to_messages(row, fmt)[0]
                prompt = messages[:max(i for i, m in enumerate(messages) if m["role"] == "assistant")]
            elif isinstance(row, dict) and isinstance(row.get("instruction"), str) and row["instruction"].strip():
                extra = row.get("input") if isinstance(row.get("input"), str) else ""
                prompt = f"{row['instruction']}\n\n{extra}" if extra.strip() else row["instruction"]
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            reject(rejects, where, f"not a valid {fmt} row ({e}) to take a prompt from")
            continue
        if not prompt:
            reject(rejects, where, "a prompt row needs `prompt` (a string or a list of messages), a conversation "
                                   f"in one of the chat formats, or an `instruction`; fields found: {_fields(row)}")
            continue
        out.append(prompt)
    _done(path, rejects, out, "prompts")
    return out


TASK_PROMPT_FIELDS = ("prompt", "question", "problem")


def read_tasks(path: str | Path, rejects: Rejects | None = None, limit: int | None = None) -> list[dict]:
    """Prompts with an answer a program can check, for RL with a rule reward (`llmkit.verifier`): rows with a
    prompt (`prompt` as a string or messages, `question` or `problem`) and an expected answer (`answer`,
    `ground_truth` or `final_answer`; a GSM8K solution ending in `#### 72` counts as 72). Each: {"prompt",
    "answer"}. Rows without both go to `rejects`; a file with none is an error that says what the verifier needs."""
    out: list[dict] = []
    for row, where in _rows(path, rejects):
        if limit is not None and len(out) >= limit:
            break
        fields = row if isinstance(row, dict) else {}
        prompt = next((fields[k] for k in TASK_PROMPT_FIELDS if _given(fields.get(k))), None)
        answer = next((fields[k] for k in ANSWER_FIELDS if _given(fields.get(k))), None)
        if prompt is None or answer is None or not expected_answer(answer):
            reject(rejects, where, f"a task row needs a prompt ({', '.join(TASK_PROMPT_FIELDS)}) and an answer to "
                                   f"check ({', '.join(ANSWER_FIELDS)}); fields found: {_fields(row)}")
            continue
        out.append({"prompt": prompt, "answer": expected_answer(answer)})
    if rejects is not None:
        rejects.check(path)
    if not out:
        raise DataError(f"{path}: no prompt with an answer to check: the verifier needs a prompt "
                        f"({', '.join(TASK_PROMPT_FIELDS)}) and an answer ({', '.join(ANSWER_FIELDS)}) in each row "
                        "(use the reward model instead: --reward model)")
    return out


def _given(value) -> bool:
    return isinstance(value, str) and bool(value.strip()) or isinstance(value, list) and bool(value) or (
        isinstance(value, (int, float)) and not isinstance(value, bool))


def _rows(path: str | Path, rejects: Rejects | None):
    """The records of a file, each counted in `rejects.seen`; malformed lines go to `rejects` too."""
    for row, where in iter_records(path, ReadStats(rejects=rejects)):
        if rejects is not None:
            rejects.seen += 1
        yield row, where


def _done(path, rejects: Rejects | None, out: list, what: str) -> None:
    if rejects is not None:
        rejects.check(path)
    if not out:
        raise DataError(f"{path}: no {what} found")


def _fields(row) -> str:
    return "[" + (", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__) + "]"


def expected_fields() -> str:
    return "; ".join(f"{name}: {fields}" for name, fields in EXPECTED.items())


def detect_format(row: dict) -> str | None:
    """The format a row is in, from its fields; None if it matches none."""
    if not isinstance(row, dict):
        return None
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "instances" in row:
        return "self_instruct"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    for key in ("chosen", "text"):
        if isinstance(row.get(key), str) and "\n\nAssistant:" in row[key] and "Human:" in row[key]:
            return "hh"
    return None


def to_messages(row: dict, data_format: str) -> list[list[dict]]:
    """The conversations (usually one) in a row of `data_format`. Raises ValueError saying what is wrong."""
    if data_format not in EXPECTED:
        raise ValueError(f"unknown format {data_format!r}; accepted: {', '.join(CHAT_FORMATS)}")
    if not isinstance(row, dict):
        raise ValueError(f"the row is a {type(row).__name__}, not an object")
    convert = {"messages": _from_messages, "alpaca": _from_alpaca, "sharegpt": _from_sharegpt,
               "prompt_completion": _from_prompt_completion, "hh": _from_hh, "self_instruct": _from_self_instruct}
    return [_check(m) for m in convert[data_format](row)]


def read_conversations(path: str | Path, data_format: str = "auto", limit: int | None = None,
                       rejects: Rejects | None = None) -> list[dict]:
    """Rows {"messages": [...]} from a file or folder in any of CHAT_FORMATS (`auto`: detected from the first row that
    matches one). A row that cannot be read goes to `rejects`, with its file, line and the fields expected;
    without one, it stops the read."""
    if data_format != "auto" and data_format not in EXPECTED:
        raise DataError(f"data_format={data_format!r} is not a format llmkit reads; accepted: auto, {', '.join(CHAT_FORMATS)}")
    out: list[dict] = []
    fmt = None if data_format == "auto" else data_format
    for row, where in _rows(path, rejects):
        if fmt is None:
            fmt = detect_format(row)
            if fmt is None:
                reject(rejects, where, f"cannot tell the chat-data format of a row with fields {_fields(row)}; "
                                       f"expected one of — {expected_fields()}")
                continue
        try:
            conversations = to_messages(row, fmt)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            reject(rejects, where, f"not a valid {fmt} row ({e}); fields found: {_fields(row)}; "
                                   f"expected {EXPECTED[fmt]}")
            continue
        out += [{"messages": m} for m in conversations]
        if limit is not None and len(out) >= limit:
            return out[:limit]
    _done(path, rejects, out, "conversations")
    return out


# ---- one converter per format ---------------------------------------------------------------------
def _text(row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise ValueError(f"`{key}` is missing or not a string")
    return value


def _turns(items, role_key: str, content_key: str, what: str) -> list[dict]:
    """[{role_key, content_key}, …] -> messages, with the role names of ROLES."""
    if not isinstance(items, list):
        raise ValueError(f"`{what}` is not a list")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, dict) or role_key not in m or content_key not in m:
            raise ValueError(f"{what}[{i}] is not a {{{role_key}, {content_key}}} object")
        role = ROLES.get(str(m[role_key]).lower())
        if role is None:
            raise ValueError(f"{what}[{i}] has {role_key} {m[role_key]!r}; accepted: {', '.join(ROLES)}")
        out.append({"role": role, "content": _content_text(m[content_key], i)})
    return out


def _from_messages(row: dict) -> list[list[dict]]:
    return [_turns(row["messages"], "role", "content", "messages")]


def _content_text(content, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": …}, …]
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    raise ValueError(f"message {i}'s content is a {type(content).__name__}, not text")


def _from_alpaca(row: dict) -> list[list[dict]]:
    instruction, output = _text(row, "instruction"), _text(row, "output")
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise ValueError("`input` is not a string")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    system = [{"role": "system", "content": row["system"]}] if isinstance(row.get("system"), str) and row["system"] else []
    return [system + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]]


def _from_sharegpt(row: dict) -> list[list[dict]]:
    return [_turns(row["conversations"], "from", "value", "conversations")]


def _from_prompt_completion(row: dict) -> list[list[dict]]:
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list) and isinstance(completion, list):  # conversational prompt/completion
        return _from_messages({"messages": prompt + completion})
    if isinstance(prompt, str) and isinstance(completion, str):
        return [[{"role": "user", "content": prompt}, {"role": "assistant", "content": completion.lstrip()}]]
    raise ValueError("`prompt` and `completion` must both be strings or both lists of messages")


def hh_transcript(text: str) -> list[dict]:
    """'\\n\\nHuman: hi\\n\\nAssistant: hello' -> [{user: hi}, {assistant: hello}]."""
    parts = _HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise ValueError("the transcript does not start with '\\n\\nHuman:'")
    msgs = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        msgs.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return msgs


def _from_hh(row: dict) -> list[list[dict]]:
    key = "chosen" if "chosen" in row else "text"
    return [hh_transcript(_text(row, key))]


def _from_self_instruct(row: dict) -> list[list[dict]]:
    instruction, instances = _text(row, "instruction"), row["instances"]
    if not isinstance(instances, list) or not instances:
        raise ValueError("`instances` is not a non-empty list")
    out = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict) or not isinstance(inst.get("output"), str):
            raise ValueError(f"instance {i} has no string `output`")
        extra = inst.get("input") or ""
        user = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
        out.append([{"role": "user", "content": user}, {"role": "assistant", "content": inst["output"]}])
    return out


def _check(messages: list[dict]) -> list[dict]:
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the conversation has no assistant turn to learn from")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the conversation does not end with an assistant turn")
    return messages


# ---- preference pairs (reward model, DPO) ---------------------------------------------------------
PREFERENCE_EXPECTED = {
    "explicit": "`prompt`, `chosen` and `rejected` (strings, or lists of messages)",
    "implicit": "`chosen` and `rejected`: whole conversations (lists of messages) that share a prompt",
    "hh": "`chosen` and `rejected`: '\\n\\nHuman: …\\n\\nAssistant: …' transcripts that share a prompt",
}


def detect_preference_format(row: dict) -> str | None:
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        return None
    if "prompt" in row:
        return "explicit"
    if isinstance(row["chosen"], str) and "\n\nAssistant:" in row["chosen"]:
        return "hh"
    if isinstance(row["chosen"], list):
        return "implicit"
    return None


def to_preference(row: dict, data_format: str) -> dict:
    """One row -> {"prompt": [messages], "chosen": [messages], "rejected": [messages]}: the prompt ends with a user
    turn and each answer starts with an assistant turn (one turn, unless the transcripts part before the last)."""
    if data_format not in PREFERENCE_EXPECTED:
        raise ValueError(f"unknown preference format {data_format!r}; accepted: {', '.join(PREFERENCE_FORMATS)}")
    if not isinstance(row, dict):
        raise ValueError(f"the row is a {type(row).__name__}, not an object")
    if data_format == "explicit":
        prompt = row["prompt"]
        prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _turns(prompt, "role", "content", "prompt")
        answers = []
        for key in ("chosen", "rejected"):
            value = row[key]
            turns = ([{"role": "assistant", "content": value.lstrip()}] if isinstance(value, str)
                     else _turns(value, "role", "content", key))
            if len(turns) != 1 or turns[0]["role"] != "assistant":
                raise ValueError(f"`{key}` must be one assistant answer (a string or one assistant message)")
            answers.append(turns)
        if not prompt or prompt[-1]["role"] != "user":
            raise ValueError("`prompt` must end with a user turn")
        return {"prompt": prompt, "chosen": answers[0], "rejected": answers[1]}
    if data_format == "hh":
        chosen, rejected = hh_transcript(_text(row, "chosen")), hh_transcript(_text(row, "rejected"))
    else:
        chosen = _turns(row["chosen"], "role", "content", "chosen")
        rejected = _turns(row["rejected"], "role", "content", "rejected")
    for name, convo in (("chosen", chosen), ("rejected", rejected)):
        if len(convo) < 2 or convo[-1]["role"] != "assistant":
            raise ValueError(f"`{name}` must end with an assistant answer after at least one user turn")
    # The prompt is the longest prefix both share (TRL's extract_prompt), cut back to its last user turn; what
    # follows is each side's answer: usually one assistant turn, several where the transcripts part earlier (the
    # rest of each conversation is then the answer, as TRL keeps it).
    shared = next((i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected)))
    while shared and chosen[shared - 1]["role"] != "user":
        shared -= 1
    if not shared:
        raise ValueError("`chosen` and `rejected` share no user turn to be the prompt")
    return {"prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}


def answer_text(answer) -> str:
    """The text shown for an answer: a string, one assistant message's content, or every turn of a longer one."""
    if isinstance(answer, str):
        return answer
    if len(answer) == 1:
        return answer[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in answer)


def read_preferences(path: str | Path, data_format: str = "auto", limit: int | None = None,
                     rejects: Rejects | None = None) -> list[dict]:
    """Preference pairs {"prompt", "chosen", "rejected"} (conversational, explicit prompt) from a file or folder in
    any of PREFERENCE_FORMATS (`auto`: detected from the first row that matches one). A row that cannot be read
    goes to `rejects`; without one, it stops the read."""
    if data_format != "auto" and data_format not in PREFERENCE_EXPECTED:
        raise DataError(f"data_format={data_format!r} is not a preference format llmkit reads; accepted: auto, "
                        f"{', '.join(PREFERENCE_FORMATS)}")
    fmt = None if data_format == "auto" else data_format
    out: list[dict] = []
    for row, where in _rows(path, rejects):
        if fmt is None:
            fmt = detect_preference_format(row)
            if fmt is None:
                reject(rejects, where, f"cannot tell the preference format of a row with fields {_fields(row)}; "
                       "expected one of — " + "; ".join(f"{k}: {v}" for k, v in PREFERENCE_EXPECTED.items()))
                continue
        try:
            out.append(to_preference(row, fmt))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            reject(rejects, where, f"not a valid {fmt} preference row ({e}); fields found: {_fields(row)}; "
                                   f"expected {PREFERENCE_EXPECTED[fmt]}")
            continue
        if limit is not None and len(out) >= limit:
            break
    _done(path, rejects, out, "preference pairs")
    return out


def train_and_eval(read, config, bundled: tuple[str, str], bundled_format: str, held_out: int,
                   rejects: Rejects | None = None) -> tuple[list, list]:
    """(train, eval) rows of a stage that trains on `config.train_data` and evaluates on `config.eval_data`, read by
    `read(path, data_format, rejects=...)`: the bundled closed world's two files (`bundled`, read strictly in
    `bundled_format`) where the config gives none; without eval data, the first 1/`held_out` of the user's own rows
    (at least one) are held out. `max_examples` keeps the first training rows, `eval_limit` the first eval rows."""
    train_file, eval_file = bundled
    own = config.train_data is not None
    train = (read(config.train_data, config.data_format, rejects=rejects) if own
             else read(bundled_path(train_file), bundled_format))
    if config.eval_data:
        evals = read(config.eval_data, config.data_format, rejects=rejects)
    elif own:
        n_eval = max(1, len(train) // held_out) if len(train) > 1 else 0
        train, evals = train[n_eval:], train[:n_eval] or train[:1]
    else:
        evals = read(bundled_path(eval_file), bundled_format)
    if config.max_examples is not None:
        if config.max_examples < 1:
            raise DataError(f"max_examples={config.max_examples}: give a positive number of training rows")
        train = train[: config.max_examples]
    return train, evals[: config.eval_limit]
