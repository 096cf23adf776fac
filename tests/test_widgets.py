import json

from llmkit import data
from widgets.corpus_inspector import CorpusInspector, plot_corpus_stats

GOOD = ("The river flows past the old mill, and the people of the town walk along it every evening. "
        "They talk about the weather, the harvest and the news from the city, and they are in no hurry. "
        "Children play on the bridge while their parents buy bread from the bakery that has stood there for "
        "a hundred years. In the spring the fields turn green and the farmers plant their crops with care. "
        "Nobody in the town can remember a time when life there was very different. ")


def test_inspector_browses_removed_documents_with_reason_and_original(data_run):
    ci = CorpusInspector(data_run.output_dir)
    assert next(iter(ci.views)).startswith("kept (")
    ci.select("removed by minhash_dedup")
    item = ci.views[ci.view.value][0]
    assert "near duplicate of" in ci.body.value
    assert "The document it duplicates, " + item["duplicate_of"] in ci.body.value
    ci.step(1)
    assert ci.index.value == 1
    ci.select("changed by pii")
    assert "redacted personal data" in ci.body.value and "<b>raw</b>" in ci.body.value
    fig = plot_corpus_stats(data_run.output_dir)
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "Removals per rule"


def test_inspector_shows_corpus_text_as_text(tmp_path):
    corpus = tmp_path / "c.jsonl"
    evil = GOOD + "<script>alert('x')</script> <img src=x onerror=alert(1)> That is all for today, friends."
    other = ("A new library opened on the hill last week, and the first visitors were the oldest readers in "
             "the district. They had waited for it since the old one closed. The shelves hold books about farming, "
             "history and the sea. The librarian says that children come after school to read and to do their "
             "homework. On Sundays there is a concert in the hall, and everyone is welcome to come and listen.")
    rows = [{"id": "evil", "text": evil}, {"id": "copy", "text": evil}, {"id": "other", "text": other}]
    corpus.write_text("\n".join(json.dumps(r) for r in rows))
    data.run(data.DataConfig(train_data=str(corpus), block_size=16, vocab_size=300), tmp_path, progress=False)
    ci = CorpusInspector(tmp_path / "data")
    ci.select("kept")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in ci.body.value
    assert "<script>" not in ci.body.value and "<img" not in ci.body.value
    ci.select("removed by exact_dedup")
    assert "<script>" not in ci.body.value and "evil" in ci.body.value


def test_live_monitor_draws_rl_logs_and_shows_rollouts_as_text():
    from widgets.live_monitor import LiveMonitor

    monitor = LiveMonitor("PPO")
    for step in (1, 2, 3):
        record = {"step": step, "reward": 0.1 * step, "score": 0.2, "kl": 0.5 * step, "oracle_score": 0.4,
                  "response_length": 20 - step, "eos_fraction": 0.5}
        if step == 2:
            record["samples"] = [{"prompt": "Who is <b>Ada</b>?", "continuation": "<script>x()</script>", "reward": 1.5}]
        monitor.on_log(record)
    assert "reward 0.300" in monitor.status.value and "KL 1.50" in monitor.status.value
    assert "&lt;script&gt;" in monitor.samples.value and "<script>" not in monitor.samples.value
    assert "<th>reward</th>" in monitor.samples.value and "1.5" in monitor.samples.value
    titles = [a.get_title() for a in monitor.fig.axes]
    assert "KL to the reference (per sequence)" in titles and "response length" in titles
