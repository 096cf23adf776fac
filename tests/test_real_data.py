"""The whole pipeline on data in the public formats people bring, generated here: plain-text books (hard-wrapped,
chapter headings) and articles in jsonl, self-instruct tasks for SFT, and Anthropic-HH transcripts for the reward
model and as RL prompts. No oracle knows this world, so the report shows what can be measured without one."""

import json
import textwrap


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_the_pipeline_on_books_self_instruct_and_hh(tmp_path, llmkit_command, novel):
    from llmkit.loaders import bundled_path, read_jsonl

    books = tmp_path / "books"
    books.mkdir()
    for b in range(3):
        chapters = [f"CHAPTER {k + 1}\n\n" + "\n\n".join(textwrap.fill(p, 70) for p in paragraphs)
                    for k, paragraphs in enumerate(novel(30, seed=b))]
        (books / f"book{b}.txt").write_text("\n\n".join(chapters) + "\n", encoding="utf-8")
    articles = [{"title": f"Article {k}", "text": "\n\n".join(paragraphs)} for k, paragraphs in enumerate(novel(20, seed=9))]
    _write_jsonl(books / "articles.jsonl", articles)  # articles beside the books, one a line
    tasks = [{"instruction": r["messages"][0]["content"], "instances": [{"input": "", "output": r["messages"][1]["content"]}]}
             for r in read_jsonl(bundled_path("sft_train.jsonl"))[:120] if len(r["messages"]) == 2]
    self_instruct = _write_jsonl(tmp_path / "self_instruct.jsonl", tasks)
    hh = [{"chosen": f"\n\nHuman: {p['prompt'][-1]['content']}\n\nAssistant: {p['chosen'][0]['content']}",
           "rejected": f"\n\nHuman: {p['prompt'][-1]['content']}\n\nAssistant: {p['rejected'][0]['content']}"}
          for p in read_jsonl(bundled_path("preferences_train.jsonl"))[:300]]
    hh.append({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Bye\n\nAssistant: Bye"})
    hh_file = _write_jsonl(tmp_path / "hh.jsonl", hh)

    done = llmkit_command("pipeline", "--run-dir", "runs/real", "--preset", "smoke", "--quiet",
                          "--data.train-data", str(books), "--data.profile", "prose", "--data.text-heading", "^CHAPTER ",
                          "--sft.train-data", str(self_instruct), "--reward.train-data", str(hh_file),
                          "--ppo.train-data", str(hh_file), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "real"
    data = json.loads((run / "data" / "metrics.json").read_text())
    assert data["documents_in"] == 110 and data["documents_out"] >= 105 and not data["warnings"]
    assert "fact_completion" not in json.loads((run / "pretrain" / "metrics.json").read_text())  # no closed world
    assert json.loads((run / "sft" / "metrics.json").read_text())["train_examples"] > 100
    reward = json.loads((run / "reward" / "metrics.json").read_text())
    assert reward["rejected_rows"] == 1 and "oracle_agreement" not in reward  # the pair without a shared prompt
    assert "share no user turn" in (run / "reward" / "rejected_rows.jsonl").read_text()
    report = (run / "report.md").read_text()
    for row in ("validation bits per byte", "epochs over the training data", "eval loss",
                "pairwise accuracy (eval split)", "rows of your files set aside", "reward-model score (SFT's)",
                "answer length in tokens (SFT's)", "answers that ended their turn", "KL to SFT per token",
                "## The same prompts, every model"):
        assert row in report, row
    assert "oracle win-rate" not in report and "fact completion" not in report
    assert "not met" not in report and "| met |" not in report  # every bar was set on the closed world
