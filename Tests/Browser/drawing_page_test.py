#!/usr/bin/env python3
"""Real-browser test of the drawing page (static/index.html) against a running gateway.

    python3 Tests/Browser/drawing_page_test.py --url http://127.0.0.1:PORT --screenshot OUT.png

Drives Debian's headless `chromium` through `chromium-driver` with Selenium: opens the page,
waits for the style list, draws strokes with real pointer input (mouse via ActionChains, plus
one pen stroke with pressure), and checks that sketch updates went out while the pointer was
down, that the progress bar showed values between 0 and 1, that the result <img> loaded the
image of a `completed` message sent after the last stroke, and that no error is shown.

The last stdout line is one JSON object: {"ok": true, ...} (exit 0) or
{"ok": false, "reason": ...} (exit 1). Diagnostics go to stderr. Everything is bounded by
--timeout (default 30 s); a watchdog kills the browser if Selenium itself hangs. SIGTERM or
SIGINT ends the run early: the browser is quit and the verdict is {"ok": false, "reason":
"interrupted by SIGTERM"} (exit 1).
"""
import argparse
import json
import os
import signal
import sys
import threading
import time

RECORDER = r"""
(() => {
  const rec = window.__drawTest = { received: [], sent: [], urls: [], opens: 0, closes: [],
                                    progress: [], pageErrors: [], pointersDown: 0 };
  const now = () => performance.now();
  const Native = window.WebSocket;
  class RecordingWebSocket extends Native {
    constructor(...args) {
      super(...args);
      rec.urls.push(String(args[0]));
      this.addEventListener("open", () => { rec.opens++; });
      this.addEventListener("close", (e) => { rec.closes.push(e.code); });
      this.addEventListener("message", (e) => {
        let m = null;
        try { m = typeof e.data === "string" ? JSON.parse(e.data) : null; } catch (_) {}
        const entry = { t: now(), binary: typeof e.data !== "string", status: m && m.status };
        if (m && "progress" in m) entry.progress = m.progress;
        if (m && m.image_url) entry.image_url = String(m.image_url);
        if (m && m.result_url) entry.result_url = String(m.result_url);
        if (m && m.message) entry.message = String(m.message).slice(0, 300);
        rec.received.push(entry);
      });
    }
    send(data) {
      let m = null;
      try { m = JSON.parse(data); } catch (_) {}
      rec.sent.push({ t: now(), type: m && m.type, duringStroke: rec.pointersDown > 0,
                      bytes: data.length || data.byteLength || 0 });
      return super.send(data);
    }
  }
  window.WebSocket = RecordingWebSocket;
  // Capture phase on window: runs before the page's own canvas listeners, so the update the
  // page flushes on pointerup counts as "after the stroke" and throttled ones as "during".
  window.addEventListener("pointerdown", (e) => { if (e.target && e.target.id === "canvas") rec.pointersDown++; }, true);
  const up = () => { rec.pointersDown = Math.max(0, rec.pointersDown - 1); };
  window.addEventListener("pointerup", up, true);
  window.addEventListener("pointercancel", up, true);
  window.addEventListener("error", (e) => { rec.pageErrors.push(String(e.message)); });
  window.addEventListener("unhandledrejection", (e) => { rec.pageErrors.push("unhandled rejection: " + String(e.reason)); });
  document.addEventListener("DOMContentLoaded", () => {
    const bar = document.getElementById("progress");
    if (!bar) return;
    const push = (v) => { const n = parseFloat(v); if (!Number.isNaN(n)) rec.progress.push(n); };
    new MutationObserver((records) => {
      for (const r of records) push(r.oldValue);
      push(bar.getAttribute("value"));
    }).observe(bar, { attributes: true, attributeFilter: ["value"], attributeOldValue: true });
  });
})();
"""

SNAPSHOT = r"""
const rec = window.__drawTest || null, img = document.getElementById("result");
const err = document.getElementById("error"), st = document.getElementById("status");
const sel = document.getElementById("style");
return {
  rec: rec, now: performance.now(),
  styles: sel ? Array.from(sel.options).map((o) => o.value) : null,
  img: img ? { src: img.currentSrc || img.src || "", complete: img.complete, w: img.naturalWidth, h: img.naturalHeight } : null,
  error: err ? err.textContent.trim() : null,
  errorVisible: err ? err.offsetParent !== null && err.textContent.trim() !== "" : false,
  status: st ? st.textContent : null,
  progressValue: document.getElementById("progress") ? document.getElementById("progress").value : null,
};
"""


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


class Failure(Exception):
    pass


class Interrupted(BaseException):
    """SIGTERM or SIGINT: stop, but still quit the browser and print a verdict."""


def interrupt(signum, _frame):
    # Once only: a second signal must not cut the cleanup in `finally` short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="gateway base URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--screenshot", required=True, help="PNG file to write (also on failure)")
    ap.add_argument("--timeout", type=float, default=30.0, help="overall time budget in seconds")
    ap.add_argument("--previews", action="store_true", help="also tick 'live previews' (server must accept it)")
    ap.add_argument("--key-declined", action="store_true",
                    help="the server needs an API key (DRAWING_AUTH, none made): the painter cancels the key prompt; "
                         "checks that the page asks once, says so, and stops trying")
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium"))
    ap.add_argument("--chromedriver", default=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    args = ap.parse_args()

    started = time.monotonic()
    deadline = started + args.timeout
    result = {"ok": False, "reason": "not started"}
    driver = None
    service = None

    def finish(res, code):
        res["elapsed_s"] = round(time.monotonic() - started, 2)
        print(json.dumps(res), flush=True)
        return code

    # Watchdog: if the browser or driver hangs past the budget, kill them and report.
    def watchdog():
        log("watchdog: time budget exceeded, killing the browser")
        if service is not None and getattr(service, "process", None) is not None:
            try:
                os.killpg(service.process.pid, signal.SIGKILL)
            except OSError:
                pass
        print(json.dumps({"ok": False, "reason": f"hung: no verdict within {args.timeout + 15:.0f} s"}), flush=True)
        os._exit(1)
    dog = threading.Timer(args.timeout + 15, watchdog)
    dog.daemon = True
    dog.start()
    # chromedriver and chromium run in their own session (see below), so a signal to this
    # script alone would leave them running: turn it into an exception that quits them.
    # Explicit handlers also because a background job of a non-interactive shell starts
    # with SIGINT ignored.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    # A parent may also start us with them blocked: under the Swift test runner, Foundation's
    # Process passes on a signal mask with SIGTERM and SIGINT blocked, and they never arrive.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    try:
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
            from selenium.webdriver.common.action_chains import ActionChains
            from selenium.webdriver.common.actions.action_builder import ActionBuilder
            from selenium.webdriver.common.actions.interaction import POINTER_PEN
            from selenium.webdriver.common.actions.pointer_input import PointerInput
            from selenium.webdriver.common.by import By
        except ImportError as e:
            result = {"ok": False, "reason": f"selenium is not installed ({e}); run scripts/install-deps.sh test"}
            return 1
        for path in (args.chromium, args.chromedriver):
            if not os.access(path, os.X_OK):
                result = {"ok": False, "reason": f"{path} missing; run scripts/install-deps.sh test"}
                return 1

        options = webdriver.ChromeOptions()
        options.binary_location = args.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900",
                     "--disable-gpu", "--no-first-run", "--disable-extensions", "--disable-background-networking"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # Own process group, so that the watchdog can kill chromedriver and chromium together.
        try:
            service = Service(executable_path=args.chromedriver, popen_kw={"start_new_session": True})
        except TypeError:  # Selenium older than 4.11 (e.g. Debian's python3-selenium)
            service = Service(executable_path=args.chromedriver)
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(max(5, deadline - time.monotonic()))
        driver.set_script_timeout(5)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
        log(f"browser up after {time.monotonic() - started:.1f} s")

        def snap():
            return driver.execute_script(SNAPSHOT)

        def wait_for(what, predicate, budget=None):
            end = min(deadline, time.monotonic() + budget) if budget else deadline
            while True:
                s = snap()
                if predicate(s):
                    return s
                if time.monotonic() >= end:
                    raise Failure(f"timed out waiting for {what}; status={s.get('status')!r} error={s.get('error')!r}")
                time.sleep(0.05)

        page = args.url.rstrip("/") + "/"
        driver.get(page)
        if driver.execute_script("return !!window.__drawTest") is not True:
            raise Failure("the recorder script was not injected")
        s = wait_for("the style list", lambda s: s["styles"] or s["error"], budget=10)
        if not s["styles"]:
            raise Failure(f"no styles loaded; the page shows: {s['error']!r}")
        log(f"styles: {s['styles']}")
        if args.previews:
            driver.find_element(By.ID, "previews").click()

        if args.key_declined:
            # This browser kept a key that the gateway no longer takes (revoked, mistyped).
            driver.execute_script("localStorage.setItem('comfy-gateway-key', 'cgw_refused');")
            driver.refresh()
            wait_for("the style list after a reload", lambda s: s["styles"] or s["error"], budget=10)
            forget_shown_with_key = driver.find_element(By.ID, "forget-key").is_displayed()
        canvas = driver.find_element(By.ID, "canvas")
        if args.key_declined:
            # Refused, then the painter cancels the key prompt. The page backs off 0.5, 1, 2 and
            # 4 s between tries: 9 s would hold four more prompts if it went on asking.
            driver.execute_script("window.__prompts = 0; window.prompt = () => { window.__prompts++; return null; };")
            ActionChains(driver, duration=15).move_to_element_with_offset(canvas, 0, 0).click_and_hold() \
                .move_by_offset(30, 20).pause(0.05).release().perform()
            wait_for("the key prompt", lambda s: driver.execute_script("return window.__prompts") >= 1, budget=10)
            time.sleep(9)
            s = snap()
            result = {
                "ok": True,
                "prompts": driver.execute_script("return window.__prompts"),
                "error": s["error"],
                "status": s["status"],
                "sketch_posts": driver.execute_script(
                    "return performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/api/sketch')).length"),
                "page_errors": s["rec"]["pageErrors"],
                "refused_key_kept": driver.execute_script("return localStorage.getItem('comfy-gateway-key')"),
                "forget_key_shown": {"with a key": forget_shown_with_key,
                                     "after the refusal": driver.find_element(By.ID, "forget-key").is_displayed()},
            }
            # The painter forgets a kept key with the header's button: gone, also after the reload.
            driver.execute_script("localStorage.setItem('comfy-gateway-key', 'cgw_kept');")
            driver.refresh()
            wait_for("the style list after a reload", lambda s: s["styles"] or s["error"], budget=10)
            driver.execute_script("window.__beforeForget = true;")
            driver.find_element(By.ID, "forget-key").click()
            wait_for("the reload after Forget key",
                     lambda s: driver.execute_script("return window.__beforeForget === undefined && document.readyState === 'complete'"), budget=10)
            result["forgotten_key"] = driver.execute_script("return localStorage.getItem('comfy-gateway-key')")
            result["forget_key_shown"]["after forgetting"] = driver.find_element(By.ID, "forget-key").is_displayed()
            return 0

        size = canvas.size
        if size["width"] < 100 or size["height"] < 100:
            raise Failure(f"canvas too small on screen: {size}")
        w, h = size["width"], size["height"]

        # Three mouse strokes of ~1 s each, so the page's throttle (one update per 250 ms) must
        # send while the button is down. Offsets are from the canvas centre (Selenium 4).
        strokes = [((-0.30, -0.25), (0.024, 0.0)), ((-0.30, 0.05), (0.020, 0.012)), ((0.0, -0.35), (-0.004, 0.026))]
        for (sx, sy), (dx, dy) in strokes:
            chain = ActionChains(driver, duration=15)
            chain.move_to_element_with_offset(canvas, int(sx * w), int(sy * h)).click_and_hold()
            for _ in range(25):
                chain.move_by_offset(int(dx * w), int(dy * h)).pause(0.025)
            chain.release().pause(0.2).perform()

        # One pen stroke with varying pressure (Pointer Events pointerType "pen").
        pen = PointerInput(POINTER_PEN, "pen")
        builder = ActionBuilder(driver, mouse=pen, duration=15)
        pa = builder.pointer_action
        pa.move_to(canvas, int(0.15 * w), int(0.1 * h)).pointer_down(pressure=0.2)
        for i in range(20):
            pa.move_to(canvas, int((0.15 + i * 0.01) * w), int((0.1 + i * 0.012) * h), pressure=min(1.0, 0.2 + i * 0.04))
            pa.pause(0.02)
        pa.pointer_up()
        builder.perform()

        s = snap()
        updates = [m for m in s["rec"]["sent"] if m["type"] == "sketch_update"]
        if not s["rec"]["urls"]:
            raise Failure("the page never opened a WebSocket (POST /api/sketch failed?): error=%r" % s["error"])
        if not updates:
            # The first update may still be waiting for the WebSocket to open.
            s = wait_for("a sketch_update", lambda s: any(m["type"] == "sketch_update" for m in s["rec"]["sent"]), budget=5)
            updates = [m for m in s["rec"]["sent"] if m["type"] == "sketch_update"]
        during = sum(1 for m in updates if m["duringStroke"])
        if during == 0:
            raise Failure(f"no sketch_update was sent while the pointer was down ({len(updates)} sent in all)")
        last_sent = max(m["t"] for m in updates)
        log(f"{len(updates)} sketch_update sent, {during} during strokes")

        # Wait for a `completed` after the last update, its image loaded in <img id=result>,
        # and 1 s without new messages (a stale job may complete before the latest one).
        def settled(s):
            rec, img = s["rec"], s["img"]
            last = rec["received"][-1] if rec["received"] else None
            if last and last["status"] == "error" and last["t"] > last_sent and s["now"] - last["t"] > 3000:
                raise Failure(f"the server answered the last sketch with an error: {last.get('message')!r}")
            done = [m for m in rec["received"] if m["status"] == "completed" and m["t"] > last_sent]
            if not done or not img or not img["src"] or not img["complete"] or img["w"] <= 0:
                return False
            latest = done[-1]
            want = latest.get("image_url") or latest.get("result_url") or ""
            if want and want.split("?")[0] not in img["src"] and not img["src"].startswith("blob:"):
                return False
            job = [m["t"] for m in rec["received"] if m["status"] in ("processing", "completed", "error", "preview")]
            last_msg = max(job)
            return s["now"] - last_msg > 1000
        s = wait_for("the result image of the last sketch", settled)

        rec = s["rec"]
        processing = [m for m in rec["received"] if m["status"] == "processing"]
        seen = rec["progress"]
        if not processing:
            raise Failure("no `processing` message was received")
        if not any(0 < v < 1 for v in seen):
            raise Failure(f"the progress bar never showed a value between 0 and 1: {seen[:40]}")
        if s["errorVisible"] or s["error"]:
            raise Failure(f"the page shows an error: {s['error']!r}")
        errors = [m for m in rec["received"] if m["status"] == "error"]
        if errors:
            raise Failure(f"the server sent error messages: {[m.get('message') for m in errors][:3]}")
        if rec["pageErrors"]:
            raise Failure(f"JavaScript errors on the page: {rec['pageErrors'][:3]}")
        if s["status"] != "done":
            raise Failure(f"status text is {s['status']!r}, expected 'done'")

        uniq = []
        for v in seen:
            v = round(v, 3)
            if not uniq or uniq[-1] != v:
                uniq.append(v)
        result = {
            "ok": True,
            "result_src": s["img"]["src"],
            "result_size": [s["img"]["w"], s["img"]["h"]],
            "progress_seen": uniq[:60],
            "messages": len(rec["received"]),
            "processing_messages": len(processing),
            "completed_messages": sum(1 for m in rec["received"] if m["status"] == "completed"),
            "preview_messages": sum(1 for m in rec["received"] if m["status"] == "preview"),
            "sketch_updates_sent": len(updates),
            "sent_during_strokes": during,
            "websocket_opens": rec["opens"],
            "styles": s["styles"],
            "status": s["status"],
        }
        return 0
    except Failure as e:
        result = {"ok": False, "reason": str(e)}
        return 1
    except Interrupted as e:
        result = {"ok": False, "reason": f"interrupted by {e}"}
        return 1
    except Exception as e:  # selenium/driver errors: report them as a failed verdict
        result = {"ok": False, "reason": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}
        return 1
    finally:
        if driver is not None:
            try:
                driver.save_screenshot(args.screenshot)
                result["screenshot"] = args.screenshot
            except Exception as e:
                result["screenshot_error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not result.get("ok"):
                try:
                    s = driver.execute_script(SNAPSHOT)
                    result["page"] = {"status": s["status"], "error": s["error"], "img": s["img"],
                                      "received": (s["rec"] or {}).get("received", [])[-8:],
                                      "ws_closes": (s["rec"] or {}).get("closes")}
                    result["console"] = [e["message"][:300] for e in driver.get_log("browser")
                                         if e.get("level") == "SEVERE"][:10]
                except Exception:
                    pass
            try:
                driver.quit()
            except Exception:
                pass
        dog.cancel()
        finish(result, 0 if result.get("ok") else 1)


if __name__ == "__main__":
    sys.exit(main())
