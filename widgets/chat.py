"""Chat with every stage's checkpoint side by side (Gradio), answers streamed token by token.

    app = ChatCompare("runs/demo")
    launch(app.build())          # inline in JupyterLab; `llmkit chat` runs it standalone

Up to four checkpoints from the run folder (base, SFT, LoRA, PPO, DPO, GRPO, …) answer the same prompt. The
pretrained base model is not a chat model: it gets the conversation as raw text and its output is labeled as
a continuation. Generation settings (temperature, top-p, max new tokens, seed) apply to all; each model keeps
its own multi-turn history; Clear starts over and Stop interrupts. When the run has a reward model, each
answer shows its RM score, and on the closed world the oracle's verdict. "Best" under an answer writes a
preference pair (that answer over each other one) to the labels file the annotation app uses, so the reward
stage can learn from it. Model text is escaped before display: it is shown as text, never as HTML.
"""

from __future__ import annotations

import html
from pathlib import Path

from llmkit import generation
from llmkit.labels import LabelStore, make_item
from llmkit.registry import model_folders
from llmkit.runs import StageError

MAX_PANES = 4


def checkpoints(run_dir: str | Path) -> dict[str, Path]:
    """{name: folder} of the finished stages in RUN_DIR that hold a causal language model: the pipeline's, in its
    order, then any other (a stage run under another name, such as notebook 06's ppo_weak_kl)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return {}
    known = model_folders()
    others = sorted(p.name for p in run_dir.iterdir() if p.is_dir() and p.name not in known + model_folders(("reward",)))
    return {name: run_dir / name for name in (*known, *others)
            if (run_dir / name / "config.json").exists() and (run_dir / name / "metrics.json").exists()}


def is_base(name: str) -> bool:
    """A pretrained base model: no chat template to answer with, so it continues raw text."""
    return name in model_folders(("base",))


class ChatCompare:
    """The app's state and event functions; `build()` lays them out."""

    def __init__(self, run_dir: str | Path, labels_path: str | Path | None = None, closed_world: bool = True):
        self.run_dir = Path(run_dir)
        self.available = checkpoints(self.run_dir)
        if not self.available:
            raise StageError(f"{self.run_dir}: no finished stage with a model; run `llmkit pipeline --run-dir "
                             f"{self.run_dir}` first")
        self.labels = LabelStore(labels_path or self.run_dir / "labels.jsonl")
        self._models: dict[str, tuple] = {}
        self._rm = None
        self.oracle = None
        if closed_world:
            from llmkit.oracle import Oracle

            self.oracle = Oracle()

    # ---- models ----------------------------------------------------------------------------------
    def model(self, name: str):
        if name not in self._models:
            from transformers import AutoTokenizer

            from llmkit.model import load_causal_lm

            folder = self.available[name]
            self._models[name] = (load_causal_lm(folder), AutoTokenizer.from_pretrained(folder, local_files_only=True))
        return self._models[name]

    def reward_model(self):
        if self._rm is None and (self.run_dir / "reward" / "metrics.json").exists():
            from llmkit.reward_model import RewardModel

            self._rm = RewardModel.load(self.run_dir / "reward", "cpu")
        return self._rm

    def render_input(self, name: str, history: list[dict]) -> list[int]:
        """Token ids the model is given: the chat template, or raw text for the base model."""
        mdl, tok = self.model(name)
        if is_base(name):
            text = (tok.bos_token or "") + "\n".join(m["content"] for m in history)
            return tok(text, add_special_tokens=False)["input_ids"]
        return list(tok.apply_chat_template(history, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])

    def stream(self, name: str, history: list[dict], max_new_tokens: int = 48, temperature: float = 0.7,
               top_p: float = 1.0, seed: int = 0):
        """Yield the answer so far after every new token (`llmkit.generation.stream`: KV cache, stops at EOS)."""
        mdl, tok = self.model(name)
        yield from generation.stream(mdl, tok, self.render_input(name, history), max_new_tokens, temperature, top_p,
                                     seed)

    # ---- events ----------------------------------------------------------------------------------
    def respond(self, prompt: str, selected: list[str], histories: dict, max_new_tokens: int = 48,
                temperature: float = 0.7, top_p: float = 1.0, seed: int = 0):
        """Stream every selected model's answer, round-robin one token each. Yields (histories, verdicts)."""
        selected = [s for s in selected if s in self.available][:MAX_PANES]
        prompt = (prompt or "").strip()
        histories = {k: list(v) for k, v in (histories or {}).items()}
        if not prompt or not selected:
            yield histories, {}
            return
        streams = {}
        for name in selected:
            h = histories.setdefault(name, [])
            h.append({"role": "user", "content": prompt})
            h.append({"role": "assistant", "content": ""})
            streams[name] = self.stream(name, h[:-1], max_new_tokens, temperature, top_p, seed)
        while streams:
            for name in list(streams):
                try:
                    histories[name][-1]["content"] = next(streams[name])
                except StopIteration:
                    del streams[name]
            yield histories, {}
        yield histories, self.verdicts(prompt, {n: histories[n][-1]["content"] for n in selected})

    def verdicts(self, prompt: str, answers: dict[str, str]) -> dict[str, str]:
        """Per answer: the RM score (if the run has a reward model) and the oracle's verdict (closed world)."""
        out = {}
        rm = self.reward_model()
        names = list(answers)
        scores = rm.score([prompt] * len(names), [answers[n] for n in names]) if rm else [None] * len(names)
        for n, s in zip(names, scores):
            parts = [] if s is None else [f"RM score {s:+.2f}"]
            if self.oracle is not None:
                v = self.oracle.judge(prompt, answers[n])
                if v.kind != "unparsed":
                    parts.append(f"oracle: {'correct' if v.correct >= 1 else 'not correct'}, score {v.score:.2f}")
            if is_base(n):
                parts.append("raw continuation (base model: no chat template)")
            out[n] = " · ".join(parts)
        return out

    def vote(self, best: str, histories: dict, annotator: str = "chat") -> str:
        """Write `best`'s last answer over each other model's last answer to the same prompt as preference labels."""
        if best not in (histories or {}) or not histories[best]:
            return "Nothing to vote on yet."
        prompt_msgs = histories[best][:-1]
        good = histories[best][-1]["content"]
        written = 0
        for name, h in histories.items():
            if name == best or not h or h[:-1] != prompt_msgs or h[-1]["content"] == good:
                continue
            item = make_item(prompt_msgs, [good, h[-1]["content"]], {"models": [best, name]})
            if self.labels.add(item, annotator, "A", a_idx=0, source="chat") is not None:
                written += 1
        return f"Saved {written} preference pair(s): {best} over the others, in {self.labels.path}."

    # ---- layout ----------------------------------------------------------------------------------
    def build(self):
        import gradio as gr

        names = list(self.available)
        default = [n for n in ("pretrain", "sft", "ppo") if n in names] or names[:2]
        with gr.Blocks(title="llmkit: compare checkpoints") as demo:
            histories = gr.State({})
            with gr.Row():
                selected = gr.CheckboxGroup(names, value=default, label=f"Checkpoints (up to {MAX_PANES})",
                                            elem_id="llmkit-models")
            with gr.Accordion("Generation settings", open=False):
                with gr.Row():
                    max_new = gr.Slider(8, 256, value=48, step=8, label="max new tokens")
                    temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="temperature (0 = greedy)")
                    top_p = gr.Slider(0.1, 1.0, value=1.0, step=0.05, label="top-p")
                    seed = gr.Number(0, label="seed", precision=0)
            panes, notes, votes, columns = [], [], [], []
            with gr.Row():
                for i in range(MAX_PANES):
                    with gr.Column(visible=i < len(default)) as col:
                        columns.append(col)
                        title = default[i] if i < len(default) else ""
                        # text as text: Markdown would turn ![x](url) into an image the browser fetches
                        panes.append(gr.Chatbot(label=title, height=320, render_markdown=False, sanitize_html=True,
                                                allow_tags=False, elem_id=f"llmkit-pane-{i}"))
                        notes.append(gr.Textbox(label="verdict", interactive=False, elem_id=f"llmkit-verdict-{i}"))
                        votes.append(gr.Button("Best answer", elem_id=f"llmkit-vote-{i}"))
            with gr.Row():
                prompt = gr.Textbox(label="Prompt", scale=5, elem_id="llmkit-prompt")
                send = gr.Button("Send", variant="primary", elem_id="llmkit-send", scale=1)
                stop = gr.Button("Stop", elem_id="llmkit-stop", scale=1)
                clear = gr.Button("Clear", elem_id="llmkit-clear", scale=1)
            status = gr.Textbox(label="Status", interactive=False, elem_id="llmkit-status")

            def layout(sel):
                sel = list(sel or [])[:MAX_PANES]
                return [gr.update(visible=i < len(sel)) for i in range(MAX_PANES)] + \
                    [gr.update(label=(sel[i] + (" (raw continuation)" if is_base(sel[i]) else "")) if i < len(sel) else "")
                     for i in range(MAX_PANES)]

            def run(p, sel, hist, mx, t, tp, sd):
                sel = list(sel or [])[:MAX_PANES]
                for hist_out, verdicts in self.respond(p, sel, hist, mx, t, tp, sd):
                    chats = [_escaped(hist_out.get(sel[i], [])) if i < len(sel) else [] for i in range(MAX_PANES)]
                    texts = [verdicts.get(sel[i], "") if i < len(sel) else "" for i in range(MAX_PANES)]
                    yield [hist_out, *chats, *texts]

            def do_vote(i, sel, hist):
                sel = list(sel or [])
                return self.vote(sel[i], hist) if i < len(sel) else "No model in that pane."

            selected.change(layout, [selected], columns + panes)
            event = send.click(run, [prompt, selected, histories, max_new, temperature, top_p, seed],
                               [histories, *panes, *notes])
            submit = prompt.submit(run, [prompt, selected, histories, max_new, temperature, top_p, seed],
                                   [histories, *panes, *notes])
            stop.click(None, None, None, cancels=[event, submit])
            clear.click(lambda: [{}, *[[] for _ in panes], *["" for _ in notes], "Cleared."], None,
                        [histories, *panes, *notes, status])
            for i, b in enumerate(votes):
                b.click(lambda sel, hist, i=i: do_vote(i, sel, hist), [selected, histories], [status])
        return demo


def _escaped(history: list[dict]) -> list[dict]:
    """Messages for display: HTML-escaped, so a model's `<script>` shows as text."""
    return [{"role": m["role"], "content": html.escape(m["content"])} for m in history]


def launch(demo, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           auth: tuple[str, str] | None = None, block: bool = False, **kwargs):
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, prevent_thread_lock=not block,
                       **kwargs)
