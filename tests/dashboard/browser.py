#!/usr/bin/env python3
"""The dashboard page in a real browser (headless Chromium through
Selenium), driven by tests/dashboard.rs while a real deploy runs.

    browser.py URL ARTIFACT_DIR MODE

MODE `deploy`: the page follows a deploy, then is used by keyboard and by
mouse. What to expect comes in the environment: EXPECT_ROUTE (the card's
route), EXPECT_LIVE and EXPECT_PREVIOUS (the versions live and hot before
the deploy), EXPECT_NEXT (the version the test deploys). Its phases, each
one JSON line on stdout once it holds (the test acts between them):

- `watching`: the card shows EXPECT_LIVE live and EXPECT_PREVIOUS hot, the
  feed is live and the live color's requests/s line gains points with a
  nonzero legend. The test deploys EXPECT_NEXT now.
- `switched`: the page shows the switch (marks in the charts, a
  "switched" step, EXPECT_NEXT live), screenshots are saved, and the
  History lists the releases with who made them.
- `keyboard`: Tab reaches the rollback button, Enter opens the dialog with
  Cancel focused, Escape closes it and nothing was posted. The script then
  waits for a line on stdin (the test checks that nothing changed).
- `rolled-back`: the "Roll back to EXPECT_LIVE" button, confirmed in its
  dialog, ran: the toast says "rollback done (exit 0)", the card shows
  EXPECT_LIVE live and the steps say it was rolled back.
- `done`: with the browser's console messages.

MODE `read-only`: the card appears with no action buttons; one line,
`read-only`.

Any expectation that does not hold within its time ends the script with
exit 1, the reason on stderr, and a screenshot `dashboard-failure.png`.
CHROMIUM and CHROMEDRIVER name the binaries (Debian's paths by default).
"""

import base64
import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys


class Failed(Exception):
    pass


def say(phase, **fields):
    print(json.dumps({"phase": phase, **fields}), flush=True)


def until(what, timeout, check, state=lambda: ""):
    """Polls `check` every 100 ms until it returns something true, and
    returns that; raises Failed naming `what` and `state()` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise Failed(f"waited {timeout} s for {what}; {state()}")
        time.sleep(0.1)


def browser():
    options = webdriver.ChromeOptions()
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--lang=en-US"]:
        options.add_argument(arg)
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(10)
    return driver


def viewport(driver, width, height, mobile):
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def shoot(driver, folder, name, width, height, mobile):
    """The viewport at width x height as NAME.png, and the whole page as
    NAME-full.png; returns what the layout looked like."""
    viewport(driver, width, height, mobile)
    # Two frames: the layout of the new size is drawn before the shot.
    driver.execute_async_script(
        "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done()));")
    path = os.path.join(folder, name + ".png")
    driver.save_screenshot(path)
    size = driver.execute_script(
        "return {w: document.documentElement.scrollWidth, h: document.documentElement.scrollHeight,"
        " iw: window.innerWidth, ih: window.innerHeight};")
    full = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["iw"], "height": size["h"], "scale": 1}})
    with open(os.path.join(folder, name + "-full.png"), "wb") as f:
        f.write(base64.b64decode(full["data"]))
    return {"path": path, "viewport": [size["iw"], size["ih"]], "page": [size["w"], size["h"]],
            "overflows_x": size["w"] > size["iw"]}


# What the page shows of one card, read in one go.
CARD = """
const card = document.getElementById(arguments[0]);
if (!card) return null;
const facts = {};
card.querySelectorAll('.facts dt').forEach(dt => { facts[dt.textContent] = dt.nextElementSibling.textContent; });
const liveTag = card.querySelector('.facts dd .tag');
const figures = [...card.querySelectorAll('.charts figure')].map(f => ({
  caption: f.querySelector('figcaption').textContent,
  lines: Object.fromEntries([...f.querySelectorAll('polyline.line')].map(p =>
    [p.classList.contains('blue') ? 'blue' : 'green', p.getAttribute('points').trim().split(/\\s+/)])),
  legend: Object.fromEntries([...f.querySelectorAll('.legend .key')].map(k =>
    [k.classList.contains('blue') ? 'blue' : 'green', k.textContent])),
  marks: f.querySelectorAll('line.mark').length,
  markLabels: [...f.querySelectorAll('text.mark-label')].map(t => t.textContent),
}));
return {
  title: card.querySelector('h2').textContent,
  phase: card.querySelector('.phase').textContent,
  facts,
  liveColor: liveTag ? (liveTag.classList.contains('blue') ? 'blue' : 'green') : null,
  figures,
  buttons: [...card.querySelectorAll('.actions button')].map(b => ({text: b.textContent, cls: b.className, disabled: b.disabled})),
  conn: document.getElementById('conn').textContent,
  steps: [...document.querySelectorAll('#step-list li')].map(li => ({cls: li.className, text: li.textContent})),
  toast: (t => ({hidden: t.hidden, text: t.textContent, cls: t.className}))(document.getElementById('toast')),
  dialogOpen: document.getElementById('confirm').open,
};
"""


def card(driver, card_id):
    return driver.execute_script(CARD, card_id)


def brief(c):
    """A card's state for a message: each line's point count and last
    three points instead of all of them."""
    if not c:
        return c
    figures = [{**f, "lines": {k: [len(v)] + v[-3:] for k, v in f["lines"].items()}} for f in c["figures"]]
    return {**c, "figures": figures, "steps": c["steps"][:8]}


def last_y(points):
    return float(points[-1].split(",")[1]) if points else None


def deploy_mode(driver, url, folder):
    route = os.environ["EXPECT_ROUTE"]
    live, previous, nxt = os.environ["EXPECT_LIVE"], os.environ["EXPECT_PREVIOUS"], os.environ["EXPECT_NEXT"]
    card_id = "app-" + route
    viewport(driver, 1280, 900, False)
    driver.get(url)
    now = lambda: card(driver, card_id)
    show = lambda: "the page shows " + json.dumps(brief(now()))

    # The card, as the overview says, and the feed.
    until(f"the card #{card_id} with {live} live and {previous} hot",
          20, lambda: (c := now()) and live in c["facts"].get("Live", "")
          and previous in c["facts"].get("Previous", "") and "hot" in c["facts"].get("Previous", ""), show)
    until("the feed to be live (#conn)", 10, lambda: now()["conn"] == "live", show)
    first = now()
    color = first["liveColor"]
    if not color:
        raise Failed("the Live fact has no color tag: " + json.dumps(first["facts"]))

    # The requests/s chart grows under the load, and its legend says so.
    def requests(c):
        return next(f for f in c["figures"] if f["caption"].startswith("requests/s"))

    before = len(requests(first)["lines"].get(color, []))

    def grown():
        r = requests(now())
        pts = r["lines"].get(color, [])
        legend = r["legend"].get(color, "")
        rate = float(legend.rsplit(":", 1)[1]) if ":" in legend else 0.0
        return len(pts) >= before + 4 and rate > 0 and last_y(pts) < 70 and (len(pts), legend, last_y(pts))

    n_after, legend, y = until(f"the {color} requests/s line to gain 4 points with a nonzero legend",
                               15, grown, show)

    # A keyboard user's focus on the rollback button, to see whether a
    # refresh of the card (the deploy changes it) keeps it.
    driver.execute_script("const b = [...document.querySelectorAll(arguments[0])].find(b => b.textContent.startsWith('Roll back')); if (b) b.focus();",
                          f"#{card_id} .actions button")
    say("watching", live_color=color, points_before=before, points_after=n_after, legend=legend,
        last_y=y, facts=first["facts"], phase_badge=first["phase"], buttons=first["buttons"])

    # The test deploys NEXT now: the page shows the switch as it happens.
    def switched():
        c = now()
        step = next((s["text"] for s in c["steps"] if "switched" in s["cls"].split()
                     and f"({nxt} is live)" in s["text"]), None)
        marks = [f["marks"] for f in c["figures"]]
        return step and all(m >= 1 for m in marks) and nxt in c["facts"].get("Live", "") and (step, marks)

    step, marks = until(f"the switch to {nxt}: a 'switched' step, a mark in every chart, {nxt} live",
                        90, switched, show)
    focus = driver.execute_script(
        "const a = document.activeElement; return {tag: a.tagName, text: a.textContent.slice(0, 40), in_actions: !!a.closest('.actions')};")
    at_switch = now()
    desktop = shoot(driver, folder, "dashboard-desktop", 1280, 900, False)
    phone = shoot(driver, folder, "dashboard-phone", 390, 844, True)
    viewport(driver, 1280, 900, False)

    # The History, opened as a person opens it.
    summary = driver.find_element(By.CSS_SELECTOR, f"#{card_id} details.history summary")
    summary.click()
    until("the History to open", 5,
          lambda: driver.execute_script("return document.querySelector(arguments[0]).open;",
                                        f"#{card_id} details.history"))
    history = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(tr => [...tr.children].map(c => c.textContent));",
        f"#{card_id} details.history tbody tr")
    say("switched", step=step, marks=marks, mark_labels=at_switch["figures"][0]["markLabels"],
        facts=at_switch["facts"], focus_after_refresh=focus, desktop=desktop, phone=phone,
        history=[{"when": r[0], "version": r[1], "event": r[2], "color": r[3], "by": r[4]} for r in history])

    # Keyboard: Tab to the rollback button, Enter, Cancel focused, Escape.
    driver.execute_script("""
      if (!window.__posts) {
        window.__posts = [];
        const f = window.fetch;
        window.fetch = function (u) { window.__posts.push(String(u)); return f.apply(this, arguments); };
        document.getElementById('confirm').addEventListener('close', () => { window.__closes = (window.__closes || 0) + 1; });
      }
      document.activeElement && document.activeElement.blur();""")
    target = f"Roll back to {live}"
    until(f"a button {target!r}", 10, lambda: any(b["text"] == target for b in now()["buttons"]), show)
    path = []
    for _ in range(40):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        path.append(driver.execute_script(
            "const a = document.activeElement;"
            " return a.tagName.toLowerCase() + (a.id ? '#' + a.id : '') + (a.className ? '.' + a.className : '')"
            " + ' ' + JSON.stringify(a.textContent.trim().slice(0, 30));"))
        if driver.execute_script("return document.activeElement.textContent;") == target:
            break
    else:
        raise Failed(f"40 Tabs never reached the button {target!r}: {path}")
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    until("the dialog to open on Enter", 5, lambda: now()["dialogOpen"], show)
    focused = driver.execute_script(
        "const a = document.activeElement; return {text: a.textContent, value: a.value || '', in_dialog: !!a.closest('dialog')};")
    if focused["value"] != "cancel":
        raise Failed("the dialog opened with the focus on " + json.dumps(focused) + ", not Cancel")
    question = driver.find_element(By.ID, "confirm-text").text
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    until("Escape to close the dialog (its close event)", 5,
          lambda: driver.execute_script("return window.__closes === 1 && !document.getElementById('confirm').open;"), show)
    after = now()
    posts = driver.execute_script("return window.__posts.filter(u => u.includes('/api/actions')).length;")
    if posts or not after["toast"]["hidden"]:
        raise Failed(f"Escape acted: {posts} action(s) posted, toast {after['toast']}")
    refocused = driver.execute_script("return document.activeElement.textContent;")
    say("keyboard", tabs=len(path), tab_path=path, cancel_focused=True, question=question, posts=posts,
        toast_hidden=True, focus_after_escape=refocused)
    if sys.stdin.readline().strip() != "go on":
        raise Failed("the test did not say go on")

    # The mouse: the rollback button, its dialog, Confirm, the toast.
    button = next(b for b in driver.find_elements(By.CSS_SELECTOR, f"#{card_id} .actions button")
                  if b.text == target)
    if "danger" not in button.get_attribute("class").split():
        raise Failed(f"{target!r} is not marked as dangerous: class {button.get_attribute('class')!r}")
    button.click()
    until("the dialog to open on a click", 5, lambda: now()["dialogOpen"], show)
    driver.find_element(By.ID, "confirm-go").click()
    toast = until("the toast to say 'rollback done (exit 0)'", 60,
                  lambda: (t := now()["toast"]) and t["text"] == "rollback done (exit 0)" and t, show)
    until(f"the card to show {live} live again", 15, lambda: live in now()["facts"].get("Live", ""), show)
    until(f"a step 'rolled back: {live} is live again'", 10,
          lambda: any(f"rolled back: {live} is live again" in s["text"] for s in now()["steps"]), show)
    done = now()
    posts = driver.execute_script("return window.__posts.filter(u => u.includes('/api/actions')).length;")
    say("rolled-back", toast=toast, posts=posts, facts=done["facts"],
        steps=[s["text"] for s in done["steps"]][:6])
    logs = driver.get_log("browser")
    say("done", console=[{"level": e["level"], "message": e["message"]} for e in logs])


def read_only_mode(driver, url, folder):
    driver.get(url)
    state = lambda: driver.execute_script(
        "return {cards: document.querySelectorAll('article.app').length,"
        " buttons: document.querySelectorAll('article.app .actions button').length,"
        " note: [...document.querySelectorAll('article.app .actions .note')].map(n => n.textContent),"
        " title: (document.querySelector('article.app h2') || {}).textContent || ''};")
    until("a card with its read-only note", 20, lambda: (s := state())["cards"] and s["note"] and s, state)
    s = state()
    if s["buttons"]:
        raise Failed(f"a read-only page shows {s['buttons']} action button(s)")
    console = [{"level": e["level"], "message": e["message"]} for e in driver.get_log("browser")]
    say("read-only", **s, console=console)


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("deploy", "read-only"):
        sys.exit("usage: browser.py URL ARTIFACT_DIR deploy|read-only")
    url, folder, mode = sys.argv[1:]
    os.makedirs(folder, exist_ok=True)
    driver = browser()
    try:
        (deploy_mode if mode == "deploy" else read_only_mode)(driver, url, folder)
    except Failed as e:
        try:
            driver.save_screenshot(os.path.join(folder, "dashboard-failure.png"))
        except Exception:
            pass
        print(f"browser.py: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
