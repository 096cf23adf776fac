"""End-to-end: the chat comparison app in a real browser — two checkpoints, a prompt, two streamed answers, a
vote that lands on disk, and model text shown as text."""

import json

from browser import Server, browser_page, free_port


def _pane_text(page, i):
    return page.locator(f"#llmkit-pane-{i} .message-row").all_inner_texts()


def test_two_checkpoints_answer_side_by_side_and_the_vote_is_saved(chat_run, tmp_path):
    labels = tmp_path / "votes.jsonl"
    server = Server(["chat", "--run-dir", str(chat_run), "--labels", str(labels)], free_port(), tmp_path,
                    tmp_path / "server.log").start()
    try:
        with browser_page() as page:
            page.goto(server.url)
            page.wait_for_selector("#llmkit-send")
            boxes = page.locator("#llmkit-models input[type=checkbox]")
            assert boxes.count() == 2 and all(boxes.nth(i).is_checked() for i in range(2))  # pretrain and sft
            page.locator("#llmkit-prompt textarea").fill("Where was <b>Ada</b> born?")
            page.locator("#llmkit-send").click()
            # both panes show the prompt and a streamed answer
            page.wait_for_function("() => [0, 1].every(i => document.querySelectorAll("
                                   "`#llmkit-pane-${i} .message-row`).length >= 2)")
            page.wait_for_function("() => document.querySelector('#llmkit-verdict-0 textarea').value.includes('raw continuation')")
            for i in (0, 1):
                texts = _pane_text(page, i)
                assert "Where was <b>Ada</b> born?" in texts[0]  # the user's text, shown as text
            assert page.locator("#llmkit-pane-0 b").count() == 0
            assert "raw continuation" in page.locator("#llmkit-verdict-0 textarea").input_value()
            answers = {i: _pane_text(page, i)[-1] for i in (0, 1)}
            page.locator("#llmkit-vote-1").click()
            page.wait_for_function("() => document.querySelector('#llmkit-status textarea').value.startsWith('Saved')")
    finally:
        server.kill()
    records = [json.loads(line) for line in labels.read_text().splitlines()]
    if answers[0].strip() == answers[1].strip():
        assert records == []  # identical answers make no pair
    else:
        (rec,) = records
        assert rec["source"] == "chat" and rec["prompt"][-1]["content"] == "Where was <b>Ada</b> born?"
        assert rec["responses"][rec["preferred"]].strip() == answers[1].strip()
