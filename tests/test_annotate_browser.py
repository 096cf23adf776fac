"""End-to-end: the annotation app in a real browser — clicks, keys, SIGKILL, restart, resume, and XSS."""

import json

from browser import Server, browser_page, free_port

from llmkit.labels import a_index, make_item, write_items

XSS = '<script>window.__xss = 1</script><img src="xss-probe" onerror="window.__xss = 2">'


def _value(page, elem_id):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()


def _wait_progress(page, done, total):
    page.wait_for_function(
        "([d, t]) => { const el = document.querySelector('#llmkit-progress textarea, #llmkit-progress input');"
        " return el && el.value.startsWith(d + ' / ' + t); }", arg=[done, total])


def _start(page, url, name):
    page.goto(url)
    page.locator("#llmkit-annotator textarea, #llmkit-annotator input").first.fill(name)
    page.locator("#llmkit-start").click()


def test_label_with_clicks_and_keys_survive_sigkill_resume_and_show_xss_as_text(tmp_path):
    items = [make_item(f"Where was person {i} born?", [f"In town {i}.", f"Ugh, town {i}."]) for i in range(6)]
    items[3] = make_item("Tell me about " + XSS, ["Plain answer.", "Answer with " + XSS])
    write_items(tmp_path / "items.jsonl", items)
    labels = tmp_path / "labels.jsonl"
    port = free_port()
    args = ["label", "--items", str(tmp_path / "items.jsonl"), "--labels", str(labels), "--run-dir", str(tmp_path)]
    server = Server(args, port, tmp_path, tmp_path / "server.log").start()
    try:
        with browser_page() as page:
            _start(page, server.url, "ana")
            _wait_progress(page, 0, 6)
            assert _value(page, "llmkit-prompt") == items[0].prompt_text
            page.locator("#llmkit-a").click()  # click: A better
            _wait_progress(page, 1, 6)
            assert _value(page, "llmkit-prompt") == items[1].prompt_text
            page.locator("body").click(position={"x": 5, "y": 5})  # no text box focused: keys are shortcuts
            page.keyboard.press("2")  # key: B better
            _wait_progress(page, 2, 6)
            page.keyboard.press("t")  # key: tie
            _wait_progress(page, 3, 6)
            # the fourth item holds the XSS payload: shown as text, never run or rendered
            assert _value(page, "llmkit-prompt") == items[3].prompt_text
            assert XSS in _value(page, "llmkit-response-a") + _value(page, "llmkit-response-b")
            assert page.evaluate("window.__xss === undefined")
            assert page.locator('img[src="xss-probe"]').count() == 0

            server.kill()  # SIGKILL: no shutdown handler runs
            server = Server(args, port, tmp_path, tmp_path / "server.log").start()
            _start(page, server.url, "ana")
            _wait_progress(page, 3, 6)
            assert _value(page, "llmkit-prompt") == items[3].prompt_text  # resumes at the first unlabeled item
            page.locator("body").click(position={"x": 5, "y": 5})
            page.keyboard.press("4")  # key: both bad
            _wait_progress(page, 4, 6)
            assert page.evaluate("window.__xss === undefined")
    finally:
        server.kill()

    records = [json.loads(line) for line in labels.read_text().splitlines()]
    assert [r["item_id"] for r in records] == [it.id for it in items[:4]]  # each submitted label once, in order
    assert [r["choice"] for r in records] == ["A", "B", "tie", "both_bad"]
    assert all(r["annotator"] == "ana" for r in records)
    assert records[0]["preferred"] == a_index(items[0].id, "ana")
    assert records[1]["preferred"] == 1 - a_index(items[1].id, "ana")
