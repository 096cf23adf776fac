"""End-to-end: the annotation app in a real browser — clicks, keys, SIGKILL, restart, resume, and XSS."""

import json

from browser import Server, browser_page, browser_pages, free_port, outbound_probes, watch_requests

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


def test_markdown_html_and_javascript_in_pairs_load_nothing_and_show_as_written(tmp_path):
    """Prompts and answers carrying a Markdown image, raw HTML, an autolink and a javascript: link, in the labelling
    view and in the agreement tab's disagreement table: no request leaves for their URLs and the text shows as is."""
    tracker = free_port()
    probes = outbound_probes(tracker)
    items = [make_item("Describe " + probes, ["Plain. " + probes, "Other " + probes]), make_item("Hi?", ["Hi.", "Yo."])]
    write_items(tmp_path / "items.jsonl", items)
    labels = tmp_path / "labels.jsonl"
    from llmkit.labels import LabelStore

    store = LabelStore(labels)  # two annotators disagree on the probe item: it shows in the disagreement table
    store.add(items[0], "ben", "A", a_idx=0)
    store.add(items[0], "cy", "A", a_idx=1)
    args = ["label", "--items", str(tmp_path / "items.jsonl"), "--labels", str(labels), "--run-dir", str(tmp_path)]
    server = Server(args, free_port(), tmp_path, tmp_path / "server.log").start()
    try:
        with browser_page() as page:
            seen = watch_requests(page)
            _start(page, server.url, "ana")
            _wait_progress(page, 0, 2)
            assert _value(page, "llmkit-prompt") == "Describe " + probes
            assert {_value(page, "llmkit-response-a"), _value(page, "llmkit-response-b")} == set(items[0].responses)
            page.get_by_role("tab", name="Agreement").click()
            page.get_by_role("button", name="Compute agreement").click()
            page.wait_for_function("() => document.body.innerText.includes('Other ')")
            page.wait_for_timeout(1000)
            assert probes in page.locator("body").inner_text()
            assert page.locator("img[src*='127.0.0.1'], iframe, a[href^='javascript']").count() == 0
            assert page.evaluate("window.__probe === undefined")
    finally:
        server.kill()
    assert not [url for url in seen if f":{tracker}" in url], seen


def test_three_sessions_and_the_chat_votes_label_one_file_at_once_each_label_once(tmp_path):
    """ana in two tabs and ben in a third click through the same 8 pairs at the same time while another process
    writes chat-app votes into the same labels file: every label is on disk exactly once, none is lost, and each
    annotator's position resumes where their labels end."""
    import subprocess
    import sys

    items = [make_item(f"Where was person {i} born?", [f"In town {i}.", f"Ugh, town {i}."]) for i in range(8)]
    write_items(tmp_path / "items.jsonl", items)
    labels = tmp_path / "labels.jsonl"
    args = ["label", "--items", str(tmp_path / "items.jsonl"), "--labels", str(labels), "--run-dir", str(tmp_path)]
    server = Server(args, free_port(), tmp_path, tmp_path / "server.log").start()
    votes = ("import sys, time; from llmkit.labels import LabelStore, load_items\n"
             "store = LabelStore(sys.argv[1])\n"
             "for it in load_items(sys.argv[2]):\n"
             "    store.add(it, 'chat-voter', 'A', a_idx=0, source='chat'); time.sleep(0.05)\n")
    try:
        with browser_pages(3) as pages:
            for page, name in zip(pages, ["ana", "ana", "ben"]):
                _start(page, server.url, name)
            _wait_progress(pages[2], 0, 8)
            voter = subprocess.Popen([sys.executable, "-c", votes, str(labels), str(tmp_path / "items.jsonl")])
            buttons = ["#llmkit-a", "#llmkit-b", "#llmkit-tie"]
            for _ in range(12):  # at most 8 labels per annotator; a refused double submission moves on too
                live = [(i, p) for i, p in enumerate(pages) if _value(p, "llmkit-prompt")]
                if not live:
                    break
                before = {i: _value(p, "llmkit-prompt") for i, p in live}
                for i, page in live:  # the three clicks go out together
                    page.locator(buttons[i]).click()
                for i, page in live:
                    page.wait_for_function(
                        "(before) => document.querySelector('#llmkit-prompt textarea').value !== before",
                        arg=before[i])
            assert voter.wait(timeout=120) == 0
            assert all(_value(p, "llmkit-prompt") == "" for p in pages)  # everyone is through
            _start(pages[0], server.url, "ben")  # reopened: ben's position is the end
            _wait_progress(pages[0], 8, 8)
    finally:
        server.kill()
    records = [json.loads(line) for line in labels.read_text().splitlines()]
    keys = [(r["annotator"], r["item_id"]) for r in records]
    assert len(keys) == len(set(keys))  # nothing twice
    for who in ("ana", "ben", "chat-voter"):  # nothing lost
        assert sorted(i for a, i in keys if a == who) == sorted(it.id for it in items), who
