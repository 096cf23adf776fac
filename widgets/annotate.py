"""The preference-annotation app (Gradio): label which of two answers is better, crash-safe.

    app = AnnotationApp(items, "runs/demo/labels.jsonl")
    demo = app.build()
    launch(demo)               # inline in JupyterLab; `llmkit label` runs it standalone

A prompt and two responses (A and B, sides drawn per annotator and item and recorded); A better / B better /
tie / both bad, an optional note; skip and undo; keys 1 2 3 4 (or a b t x), s to skip, u to undo. Every label
is on disk (fsync) before the next item shows; reopening resumes at the first item this annotator has not
labeled. Model and dataset text is shown in text boxes, never rendered as HTML.

The event functions (`start`, `choose`, `skip`, `undo`, `agreement_tables`, `export`) are plain methods, so
tests and notebooks call them without a browser.
"""

from __future__ import annotations

from pathlib import Path

from llmkit.labels import CHOICES, Item, LabelStore, Session, agreement, export_pairs

BUTTONS = {"A": ("A is better", "llmkit-a"), "B": ("B is better", "llmkit-b"), "tie": ("Tie", "llmkit-tie"),
           "both_bad": ("Both bad", "llmkit-bad")}
KEYS = {"1": "llmkit-a", "a": "llmkit-a", "2": "llmkit-b", "b": "llmkit-b", "3": "llmkit-tie", "t": "llmkit-tie",
        "4": "llmkit-bad", "x": "llmkit-bad", "s": "llmkit-skip", "u": "llmkit-undo"}

# Gradio has no keyboard shortcuts of its own: a keydown listener clicks the buttons (not while typing).
SHORTCUTS_JS = """
() => {
  const keys = %s;
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    const tag = ((t && t.tagName) || '').toLowerCase();
    const typing = (tag === 'input' || tag === 'textarea' || (t && t.isContentEditable)) && !(t.disabled || t.readOnly);
    if (typing || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const id = keys[e.key.toLowerCase()];
    const el = id && document.getElementById(id);
    if (el) { e.preventDefault(); el.click(); }
  });
}
"""


MAX_SHOWN = 20_000  # characters of a prompt or answer the page shows (a megabyte of text would stall it)


def for_display(text: str) -> str:
    """`text`, or its first MAX_SHOWN characters with a line that says how much was cut (the label keeps it all)."""
    if len(text) <= MAX_SHOWN:
        return text
    return text[:MAX_SHOWN] + f"\n\n[... truncated for display: {len(text) - MAX_SHOWN:,} more characters]"


class AnnotationApp:
    """The app's state and event functions; `build()` lays them out as a Gradio Blocks app."""

    def __init__(self, items: list[Item], labels_path: str | Path, annotator: str = ""):
        if not items:
            raise ValueError("no items to label")
        self.items = items
        self.store = LabelStore(labels_path)
        self.annotator = annotator
        self._sessions: dict[str, Session] = {}

    def session(self, name: str) -> Session:
        name = (name or "").strip()
        if not name:
            raise ValueError("type your name first")
        if name not in self._sessions:
            self._sessions[name] = Session(self.items, self.store, name)
        return self._sessions[name]

    # Each event returns (item id on screen, prompt, response A, response B, progress, note, status).
    def view(self, name: str, status: str = "") -> tuple:
        s = self.session(name)
        item = s.current()
        progress = f"{s.done()} / {len(self.items)} labeled by {s.annotator}"
        if item is None:
            return "", "", "", "", progress, "", status or "All items are labeled. Thank you!"
        a, b, _ = s.sides(item)
        return item.id, for_display(item.prompt_text), for_display(a), for_display(b), progress, "", status

    def start(self, name: str) -> tuple:
        try:
            return self.view(name, "Labels go to " + str(self.store.path))
        except ValueError as e:
            return "", "", "", "", "", "", str(e)

    def choose(self, name: str, shown_item_id: str, choice: str, note: str = "") -> tuple:
        if choice not in CHOICES:
            raise ValueError(f"choice {choice!r}; accepted: {', '.join(CHOICES)}")
        try:
            s = self.session(name)
        except ValueError as e:
            return "", "", "", "", "", note, str(e)
        if not shown_item_id:
            return self.view(name, "Nothing to label.")
        record = s.choose(shown_item_id, choice, note.strip())
        status = f"Saved: {BUTTONS[choice][0]}." if record else "That item was already labeled; nothing written twice."
        return self.view(name, status)

    def skip(self, name: str, shown_item_id: str) -> tuple:
        try:
            s = self.session(name)
        except ValueError as e:
            return "", "", "", "", "", "", str(e)
        if shown_item_id:
            s.skip(shown_item_id)
        return self.view(name, "Skipped; it comes back when the others are done.")

    def undo(self, name: str) -> tuple:
        try:
            s = self.session(name)
        except ValueError as e:
            return "", "", "", "", "", "", str(e)
        last = s.undo()
        return self.view(name, "Undone: that item is back." if last else "Nothing to undo.")

    def agreement_tables(self) -> tuple[list[list], list[list]]:
        """(kappa per annotator pair, disagreements) as table rows."""
        self.store.refresh()
        result = agreement(self.store)
        kappa = [[f"{p['annotators'][0]} / {p['annotators'][1]}", p["items"], round(p["agreement"], 3), round(p["kappa"], 3)]
                 for p in result["pairs"]]
        rows = [[d["prompt"], d["first"], d["second"],
                 "; ".join(f"{k}: {v}" for k, v in d.items() if k not in ("item_id", "prompt", "first", "second"))]
                for d in result["disagreements"]]
        return kappa, rows

    def export(self, out_path: str | Path) -> str:
        self.store.refresh()
        rows, counts = export_pairs(self.store, out_path)
        return (f"Wrote {counts['pairs']} pairs to {out_path}; left out {counts['tie']} ties and "
                f"{counts['both_bad']} 'both bad'.")

    # ---- layout ----------------------------------------------------------------------------------
    def build(self, export_path: str | Path | None = None):
        import gradio as gr

        export_path = export_path or Path(self.store.path).with_name("preference_pairs.jsonl")
        with gr.Blocks(title="llmkit: label preferences") as demo:
            shown = gr.State("")
            with gr.Tab("Label"):
                with gr.Row():
                    name = gr.Textbox(label="Annotator", value=self.annotator, elem_id="llmkit-annotator", scale=3)
                    start = gr.Button("Start / resume", elem_id="llmkit-start", scale=1)
                    progress = gr.Textbox(label="Progress", interactive=False, elem_id="llmkit-progress", scale=3)
                prompt = gr.Textbox(label="Prompt", interactive=False, lines=2, elem_id="llmkit-prompt")
                with gr.Row():
                    a = gr.Textbox(label="Response A", interactive=False, lines=6, elem_id="llmkit-response-a")
                    b = gr.Textbox(label="Response B", interactive=False, lines=6, elem_id="llmkit-response-b")
                with gr.Row():
                    buttons = {c: gr.Button(label, elem_id=eid, variant="primary" if c in "AB" else "secondary")
                               for c, (label, eid) in BUTTONS.items()}
                with gr.Row():
                    note = gr.Textbox(label="Note (optional)", elem_id="llmkit-note", scale=4)
                    skip = gr.Button("Skip", elem_id="llmkit-skip", scale=1)
                    undo = gr.Button("Undo", elem_id="llmkit-undo", scale=1)
                status = gr.Textbox(label="Status", interactive=False, elem_id="llmkit-status")
                gr.Markdown("Keys: **1**/**a** A better · **2**/**b** B better · **3**/**t** tie · **4**/**x** both bad · "
                            "**s** skip · **u** undo (not while typing in a text box).")
            outputs = [shown, prompt, a, b, progress, note, status]
            # named endpoints: gradio_client drives the app by these names (benchmarks/apps_load.py)
            start.click(self.start, [name], outputs, api_name="start")
            name.submit(self.start, [name], outputs, api_visibility="private")
            for choice, button in buttons.items():
                button.click(lambda n, i, t, c=choice: self.choose(n, i, c, t), [name, shown, note], outputs,
                             api_name=f"choose_{choice}")
            skip.click(self.skip, [name, shown], outputs, api_name="skip")
            undo.click(self.undo, [name], outputs, api_name="undo")
            with gr.Tab("Agreement"):
                refresh = gr.Button("Compute agreement")
                kappa = gr.Dataframe(headers=["annotators", "items", "agreement", "Cohen's kappa"], interactive=False)
                disagree = gr.Dataframe(headers=["prompt", "first response", "second response", "labels"],
                                        interactive=False, wrap=True)
                refresh.click(self.agreement_tables, [], [kappa, disagree])
            with gr.Tab("Export"):
                out = gr.Textbox(label="Write TRL prompt/chosen/rejected pairs to", value=str(export_path))
                go = gr.Button("Export")
                done = gr.Textbox(label="Result", interactive=False)
                go.click(self.export, [out], [done])
        return demo


def launch(demo, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           auth: tuple[str, str] | None = None, block: bool = False, **kwargs):
    """Serve the app on this machine only unless `host` says otherwise; never a public share link unless asked.
    In JupyterLab it shows inline; from a script, `block=True` serves until interrupted."""
    import gradio as gr

    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, js=shortcuts_js(),
                       prevent_thread_lock=not block, theme=gr.themes.Default(), **kwargs)


def shortcuts_js() -> str:
    import json

    return SHORTCUTS_JS % json.dumps(KEYS)
