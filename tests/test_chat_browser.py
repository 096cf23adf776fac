"""End-to-end: the chat comparison app in a real browser — two checkpoints, a prompt, two streamed answers, a
vote that lands on disk, and model text shown as text."""

import json

from browser import Server, browser_page, free_port, outbound_probes, watch_requests


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


def test_markdown_html_and_javascript_in_the_text_load_nothing_and_show_as_written(chat_run, tmp_path):
    """A prompt carrying a Markdown image, raw HTML (an image, an iframe, a script), an autolink and a javascript:
    link: the browser requests none of their URLs, runs nothing, and both panes show the text as it was typed."""
    tracker = free_port()  # nothing listens there: a request to it is the leak
    probes = outbound_probes(tracker)
    server = Server(["chat", "--run-dir", str(chat_run), "--labels", str(tmp_path / "votes.jsonl")], free_port(),
                    tmp_path, tmp_path / "server.log").start()
    try:
        with browser_page() as page:
            seen = watch_requests(page)
            page.goto(server.url)
            page.wait_for_selector("#llmkit-send")
            page.locator("#llmkit-prompt textarea").fill("Tell me about " + probes)
            page.locator("#llmkit-send").click()
            page.wait_for_function("() => [0, 1].every(i => document.querySelectorAll("
                                   "`#llmkit-pane-${i} .message-row`).length >= 2)")
            page.wait_for_function("() => document.querySelector('#llmkit-verdict-1 textarea').value !== ''")
            page.wait_for_timeout(1000)  # give anything that would load the time to ask
            for i in (0, 1):
                assert _pane_text(page, i)[0].strip() == "Tell me about " + probes  # every character, as typed
                pane = page.locator(f"#llmkit-pane-{i}")
                assert pane.locator("img[src*='127.0.0.1'], iframe, a[href^='javascript']").count() == 0
            assert page.evaluate("window.__probe === undefined")
    finally:
        server.kill()
    assert not [url for url in seen if f":{tracker}" in url], seen
