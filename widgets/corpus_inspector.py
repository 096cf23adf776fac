"""Corpus inspector: browse what the data stage kept, removed and changed, with each rule's reason.

    from widgets.corpus_inspector import CorpusInspector, plot_corpus_stats
    CorpusInspector("runs/demo/data")          # shows itself in a notebook cell
    plot_corpus_stats("runs/demo/data")

Texts are shown as text: everything from the corpus is HTML-escaped before it reaches the page.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

import ipywidgets as w

from llmkit.loaders import bundled_path, load_documents, read_jsonl
from llmkit.runs import read_stage_config


class CorpusInspector:
    def __init__(self, stage_dir: str | Path):
        self.stage_dir = Path(stage_dir)
        self.kept = read_jsonl(self.stage_dir / "documents.jsonl")
        self.removed = read_jsonl(self.stage_dir / "removed.jsonl")
        self.changes = read_jsonl(self.stage_dir / "changes.jsonl")
        config = read_stage_config(self.stage_dir) or {}
        corpus = config.get("train_data") or bundled_path("corpus.jsonl")
        raw, _ = load_documents(corpus, config.get("text_field"), config.get("max_examples"))
        self.raw = {d["id"]: d["text"] for d in raw}
        self.final = {d["id"]: d["text"] for d in self.kept}
        self.views = self._views()

        self.view = w.Dropdown(options=list(self.views), description="Show", layout=w.Layout(width="420px"))
        self.index = w.BoundedIntText(value=0, min=0, max=0, description="#", layout=w.Layout(width="160px"))
        self.prev = w.Button(description="◀ prev", layout=w.Layout(width="80px"))
        self.next = w.Button(description="next ▶", layout=w.Layout(width="80px"))
        self.count = w.Label()
        self.body = w.HTML()
        self.view.observe(lambda _: self._on_view(), names="value")
        self.index.observe(lambda _: self.render(), names="value")
        self.prev.on_click(lambda _: self.step(-1))
        self.next.on_click(lambda _: self.step(1))
        self.widget = w.VBox([w.HBox([self.view, self.prev, self.index, self.next, self.count]), self.body])
        self._on_view()

    def _views(self) -> dict[str, list[dict]]:
        views: dict[str, list[dict]] = {f"kept ({len(self.kept)})": [{"id": d["id"], "kind": "kept"} for d in self.kept]}
        for rule, n in Counter(r["rule"] for r in self.removed).most_common():
            views[f"removed by {rule} ({n})"] = [{**r, "kind": "removed"} for r in self.removed if r["rule"] == rule]
        for rule, n in Counter(c["rule"] for c in self.changes).most_common():
            views[f"changed by {rule} ({n})"] = [{**c, "kind": "changed"} for c in self.changes if c["rule"] == rule]
        return views

    def _on_view(self) -> None:
        items = self.views[self.view.value]
        self.index.max = max(len(items) - 1, 0)
        self.index.value = 0
        self.count.value = f"of {len(items)}"
        self.render()

    def step(self, delta: int) -> None:
        self.index.value = min(max(self.index.value + delta, 0), self.index.max)

    def select(self, view_prefix: str, index: int = 0) -> None:
        """Show the `index`-th document of the first view whose name starts with `view_prefix`."""
        self.view.value = next(v for v in self.views if v.startswith(view_prefix))
        self.index.value = index

    def render(self) -> None:
        items = self.views[self.view.value]
        if not items:
            self.body.value = "<i>nothing here</i>"
            return
        item = items[self.index.value]
        self.body.value = render_item(item, self.raw, self.final)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _pre(text: str) -> str:
    return ("<pre style='white-space:pre-wrap;max-height:360px;overflow:auto;border:1px solid #ddd;"
            f"padding:6px;margin:2px'>{html.escape(text)}</pre>")


def render_item(item: dict, raw: dict[str, str], final: dict[str, str]) -> str:
    """HTML for one kept, removed or changed document (all corpus text escaped)."""
    doc_id = item["id"]
    head = f"<b>{html.escape(doc_id)}</b>"
    if item["kind"] == "kept":
        return head + " — kept" + _pre(final.get(doc_id, ""))
    if item["kind"] == "removed":
        out = (head + f" — removed by <b>{html.escape(item['rule'])}</b>: {html.escape(item['reason'])}"
               + _pre(item["text"]))
        if item.get("duplicate_of"):
            original = final.get(item["duplicate_of"], raw.get(item["duplicate_of"], ""))
            out += f"<b>The document it duplicates, {html.escape(item['duplicate_of'])}:</b>" + _pre(original)
        return out
    return (head + f" — changed by <b>{html.escape(item['rule'])}</b>: {html.escape(item['reason'])}"
            + "<div style='display:flex;gap:8px'><div style='flex:1'><b>raw</b>" + _pre(raw.get(doc_id, ""))
            + "</div><div style='flex:1'><b>final</b>" + _pre(final.get(doc_id, "")) + "</div></div>")


def plot_corpus_stats(stage_dir: str | Path, save_to: str | Path | None = None):
    """Removals per rule, and document length (words) of kept vs removed documents."""
    import matplotlib.pyplot as plt

    stage_dir = Path(stage_dir)
    kept = read_jsonl(stage_dir / "documents.jsonl")
    removed = read_jsonl(stage_dir / "removed.jsonl")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
    counts = Counter(r["rule"] for r in removed).most_common()
    ax1.barh([c[0] for c in counts][::-1], [c[1] for c in counts][::-1], color="#c0504d")
    ax1.set_xlabel("documents removed")
    ax1.set_title("Removals per rule")
    bins = [2 ** k for k in range(0, 13)]
    ax2.hist([len(d["text"].split()) for d in kept], bins=bins, alpha=0.7, label=f"kept ({len(kept)})")
    ax2.hist([len(d["text"].split()) for d in removed], bins=bins, alpha=0.7, label=f"removed ({len(removed)})")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("words per document")
    ax2.set_title("Document length, kept vs removed")
    ax2.legend()
    fig.tight_layout()
    if save_to:
        fig.savefig(save_to, dpi=100)
    return fig
