"""The workbench in a real headless Chromium (Debian chromium + chromium-driver, Selenium).

Open the queue, accept one entity, relabel one, fix a span, add a missed mention by
selecting text, submit with the keyboard; then check the `reviews` rows, the exported
annotation (offsets slice the text, emoji and combining marks before the spans) and the
queue state. A screenshot is saved under the test's output folder. In CI (CI=true) a
missing browser fails (tests/conftest.py turns skips into failures).
"""

from __future__ import annotations

import json

from browser_support import needs_browser, wait_until
from review_support import SECRET, make_extraction

from clinical_ner.data.review import codepoint_to_utf16, utf16_to_codepoint
from clinical_ner.pipeline.review_store import LocalStore, read_review_rows

pytestmark = needs_browser


def test_review_a_note_in_the_browser(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from clinical_ner_local.review_server import LocalReviewServer

    out, notes = make_extraction(tmp_path)
    with LocalReviewServer(out, [notes]) as server:
        browser.get(server.url)
        name = browser.find_element(By.ID, "reviewer")
        name.send_keys("alice", Keys.TAB)
        wait_until(browser, lambda d: "3 waiting" in d.find_element(By.ID, "progress").text)
        assert "Keys:" in browser.find_element(By.ID, "help").text

        # The JavaScript offset conversion agrees with Python's on astral + combining text.
        text = json.loads(notes.read_text("utf-8").splitlines()[0])["text"]
        js = browser.execute_script(
            "const m = workbench.Offsets.build(arguments[0]);"
            "return [m.cp2u, [...m.u2cp.entries()]];",
            text,
        )
        assert js[0] == [codepoint_to_utf16(text, i) for i in range(len(text) + 1)]
        assert all(utf16_to_codepoint(text, u) == cp for u, cp in js[1])

        # Another reviewer holds the two riskier notes, so "next" gives alice rev-001.
        queue = server.queue
        assert queue is not None
        for t in queue.open_tasks():
            if t["note_id"] != "rev-001":
                queue.claim("bob", t["task_id"])
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("n")
        wait_until(browser, lambda d: "Note rev-001" in d.find_element(By.ID, "meta").text)
        note_text = browser.execute_script("return workbench.state.note.text")
        assert note_text == text
        items = browser.find_elements(By.CSS_SELECTOR, "#entities li")
        assert [i.find_element(By.TAG_NAME, "b").text for i in items] == [
            "DISEASE",
            "DISEASE",
            "TREATMENT",
        ]  # fmt: skip  (asthma, fever (negated), salbutamol)
        assert "negated" in items[1].text and "confidence 0.55" in items[1].text
        # The structured details: asthma's ICD-10-CM code, salbutamol's normalised drug.
        details = [i.find_element(By.CSS_SELECTOR, ".details").text for i in items]
        assert "ICD-10-CM J45" in details[0], details
        assert "DrugBank DB01001" in details[2], details  # salbutamol = albuterol

        body.send_keys("a")  # accept asthma -> moves to fever
        # fix fever's span: select "no fever" (UTF-16 offsets: the emoji count twice)
        u_start = text.index("no fever")
        u = codepoint_to_utf16(text, u_start)
        browser.execute_script(
            "workbench.selectUtf16(arguments[0], arguments[1])", u, u + len("no fever")
        )
        body.send_keys("f")
        body.send_keys(Keys.ARROW_DOWN)  # salbutamol
        body.send_keys("1")  # relabel to the first label (DISEASE)
        # add the missed mention (the secret word) as TREATMENT, keyboard only
        s = codepoint_to_utf16(text, text.index(SECRET))
        browser.execute_script(
            "workbench.selectUtf16(arguments[0], arguments[1])", s, s + len(SECRET)
        )
        body.send_keys("m")  # added with the list's label (DISEASE) ...
        body.send_keys("2")  # ... and changed with a key, like any other finding
        screenshot = tmp_path / "workbench.png"
        browser.save_screenshot(str(screenshot))
        print(f"workbench screenshot: {screenshot}")
        body.send_keys("s")
        wait_until(browser, lambda d: "Saved" in d.find_element(By.ID, "status").text)
        wait_until(
            browser, lambda d: "1 reviewed, 2 waiting" in d.find_element(By.ID, "progress").text
        )

        rows = read_review_rows(LocalStore(out))
        by_decision = {r["decision"]: r for r in rows}
        assert sorted(by_decision) == [
            "accepted", "added", "note_reviewed", "relabelled", "span_fixed",
        ]  # fmt: skip
        fixed = by_decision["span_fixed"]
        assert text[fixed["start_char"] : fixed["end_char"]] == "no fever"
        assert text[fixed["model_start_char"] : fixed["model_end_char"]] == "fever"
        assert by_decision["relabelled"]["label"] == "DISEASE"
        assert by_decision["relabelled"]["model_label"] == "TREATMENT"
        added = by_decision["added"]
        assert (text[added["start_char"] : added["end_char"]], added["label"]) == (
            SECRET, "TREATMENT",
        )  # fmt: skip
        assert by_decision["note_reviewed"]["seconds_spent"] > 0
        assert {r["reviewer_id"] for r in rows} == {"alice"}

        exported = [p for p in (out / "raw").rglob("*.jsonl")]
        assert len(exported) == 1
        record = json.loads(exported[0].read_text("utf-8"))
        assert record["text"] == text
        assert [(record["text"][s:e], lab) for s, e, lab in record["label"]] == [
            ("asthma", "DISEASE"), ("no fever", "DISEASE"), ("salbutamol", "DISEASE"),
            (SECRET, "TREATMENT"),
        ]  # fmt: skip

        assert queue.progress() == {"open": 2, "done": 1, "total": 3}
        done = [t for t in queue.open_tasks() if t["note_id"] == "rev-001"]
        assert done == []
        assert screenshot.stat().st_size > 10_000
