"""Which tokens does SFT train on? A conversation drawn token by token, the trained ones highlighted.

    from widgets.label_mask import label_mask_html
    display(HTML(label_mask_html(tokenizer, messages)))

The mask is the one SFT trains with (`llmkit.chat_format.masks`): the chat template's `{% generation %}` span,
TRL's patched template of a known family, or the assistant's turns found turn by turn on any other template.
Every token is HTML-escaped, so text from a dataset is shown as text.
"""

from __future__ import annotations

import html


def label_mask(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """(token text, trained?) for every token of the rendered conversation."""
    from llmkit.chat_format import masks

    enc = masks(tokenizer, messages)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    return [(tokenizer.decode([i]), bool(m)) for i, m in zip(ids, mask)]


def label_mask_html(tokenizer, messages: list[dict]) -> str:
    tokens = label_mask(tokenizer, messages)
    spans = []
    for text, trained in tokens:
        shown = html.escape(text).replace("\n", "↵<br>")
        style = ("background:#b7e4c7;border-bottom:2px solid #2d6a4f" if trained else "color:#888;background:#f1f1f1")
        spans.append(f'<span style="{style};margin:1px;padding:0 1px;border-radius:2px;font-family:monospace">{shown}</span>')
    n = sum(t for _, t in tokens)
    legend = (f"<div><b>{n}</b> of {len(tokens)} tokens carry loss (green: the assistant's answers and the token "
              f"that ends each turn, <code>{html.escape(tokenizer.eos_token or '')}</code>; grey: template, system and "
              "user tokens, label -100)</div>")
    return legend + '<div style="line-height:1.9">' + "".join(spans) + "</div>"
