#!/usr/bin/env python
"""Notebook 07's sampling widget in a real browser: Voila serves the notebook on 127.0.0.1,
Debian's chromium (headless, driven by Selenium through the system chromedriver: nothing
downloads a browser) picks a class and a count, clicks **Sample** and waits for the images,
then moves the guidance slider and samples again (class guidance, the same seed), then guides
at w = 2 with the plausibility constraint alpha = 0.1 (the third slider) and samples once more.

    python scripts/browser_test.py                      # smoke mode, screenshot in artifacts/browser/
    python scripts/browser_test.py --count 5 --cls panda

Asserts that the grid image changed from empty to a non-blank grid of exactly ``count``
tiles (each tile 128 px: 32 px images upscaled 4x, drawn at the PNG's own size), and that
the status line reports completion for that class and count. Keeps a screenshot (also on
failure). Without chromium it fails when ``CI=true`` and skips (exit 0) otherwise.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "07_interactive_sampling.ipynb"
IMAGE_SIZE, UPSCALE, PAD, NCOL = 32, 4, 2, 8   # SamplerWidget's grid: make_grid(pad=2), upscale 4, 8 per row

# Per tile of the grid drawn into a canvas: pixel standard deviation (0 = blank).
TILE_STATS_JS = """
const img = arguments[0], tile = arguments[1], pad = arguments[2], n = arguments[3], ncol = arguments[4];
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
const out = [];
for (let k = 0; k < n; k++) {
  const x0 = pad + (k % ncol) * (tile + pad), y0 = pad + Math.floor(k / ncol) * (tile + pad);
  const d = ctx.getImageData(x0, y0, tile, tile).data;
  let s = 0, s2 = 0, m = 0;
  for (let i = 0; i < d.length; i += 4) { const v = (d[i] + d[i + 1] + d[i + 2]) / 3; s += v; s2 += v * v; m++; }
  out.push(Math.sqrt(Math.max(0, s2 / m - (s / m) ** 2)));
}
return {w: img.naturalWidth, h: img.naturalHeight, shown: img.getBoundingClientRect().width, std: out};
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser_paths():
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return chrome, driver


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cls", default="koala", help="class to pick (default %(default)s)")
    p.add_argument("--count", type=int, default=3, help="images to sample (default %(default)s)")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "browser"), help="screenshot folder")
    p.add_argument("--timeout", type=float, default=420.0, help="seconds for the page and for sampling")
    args = p.parse_args(argv)
    ci = os.environ.get("CI", "").lower() == "true"
    chrome, driver_path = browser_paths()
    if not (chrome and driver_path):
        msg = "browser test: chromium and chromedriver not found (apt-get install chromium chromium-driver)"
        print(("FAILED " if ci else "SKIPPED ") + msg)
        return 1 if ci else 0
    os.environ["SE_OFFLINE"] = "true"   # Selenium Manager must never download a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ, PCNN_SMOKE="1", MPLBACKEND="module://matplotlib_inline.backend_inline", TQDM_DISABLE="1")
    log = open(out / "voila.log", "w")
    voila = subprocess.Popen([sys.executable, "-m", "voila", str(NOTEBOOK), "--no-browser", f"--port={port}",
                              "--Voila.ip=127.0.0.1", "--ServerApp.ip=127.0.0.1",
                              "--VoilaConfiguration.http_keep_alive_timeout=600"],
                             cwd=NOTEBOOK.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    driver = None
    t0 = time.perf_counter()
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "api", timeout=2)
                break
            except OSError:
                if voila.poll() is not None:
                    raise RuntimeError(f"voila exited with {voila.returncode}; see {out / 'voila.log'}")
                time.sleep(0.5)
        opts = webdriver.ChromeOptions()
        opts.binary_location = chrome
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1400,1800", "--no-first-run", "--disable-extensions"):
            opts.add_argument(a)
        # Voila sends the page only after executing the notebook: on a busy CPU that outlasts the
        # webdriver client's 120 s HTTP timeout, so get() returns at once and the wait below, with
        # its own --timeout, waits for the widget instead.
        opts.page_load_strategy = "none"
        try:
            driver = webdriver.Chrome(service=Service(driver_path), options=opts)
        except Exception as e:  # the browser is there but cannot start
            print(f"{'FAILED' if ci else 'SKIPPED'} browser test: chromium did not start: {e}")
            return 1 if ci else 0
        driver.set_page_load_timeout(args.timeout)
        driver.get(url)   # voila executes the notebook (smoke mode) while the page renders
        wait = WebDriverWait(driver, args.timeout, poll_frequency=0.5)
        sampler = wait.until(lambda d: (d.find_elements(By.CSS_SELECTOR, ".pcnn-sampler") or [None])[0])
        print(f"widget rendered after {time.perf_counter() - t0:.0f} s", flush=True)
        img = sampler.find_element(By.CSS_SELECTOR, "img.pcnn-grid")
        before = img.get_attribute("src") or ""
        status = sampler.find_element(By.CSS_SELECTOR, ".pcnn-status")
        assert "press Sample" in status.text, f"status before a click: {status.text!r}"
        Select(sampler.find_element(By.TAG_NAME, "select")).select_by_visible_text(args.cls)
        readout = sampler.find_element(By.CSS_SELECTOR, ".widget-readout")   # the slider's editable value
        readout.click()
        readout.send_keys(Keys.CONTROL, "a")
        readout.send_keys(str(args.count), Keys.ENTER)
        wait.until(lambda d: readout.text.strip() == str(args.count))
        button = [b for b in sampler.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Sample"][0]
        button.click()
        t1 = time.perf_counter()
        wait.until(lambda d: status.text.startswith("done"))
        print(f"sampled in {time.perf_counter() - t1:.0f} s: {status.text}", flush=True)
        assert f"{args.count} x {args.cls}" in status.text, f"status {status.text!r}"
        wait.until(lambda d: (img.get_attribute("src") or "") != before
                   and d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img))
        tile = IMAGE_SIZE * UPSCALE
        stats = driver.execute_script(TILE_STATS_JS, img, tile, PAD * UPSCALE, args.count, NCOL)
        ncol = min(args.count, NCOL)
        nrow = -(-args.count // NCOL)
        want = ((ncol * (IMAGE_SIZE + PAD) + PAD) * UPSCALE, (nrow * (IMAGE_SIZE + PAD) + PAD) * UPSCALE)
        driver.save_screenshot(str(out / "07_sampler.png"))
        assert (stats["w"], stats["h"]) == want, f"grid of {stats['w']}x{stats['h']} px, want {want} ({args.count} tiles)"
        assert abs(stats["shown"] - stats["w"]) < 1.5, f"grid drawn {stats['shown']} px wide for a {stats['w']} px PNG"
        blank = [k for k, s in enumerate(stats["std"]) if s < 3.0]
        assert not blank, f"blank tiles {blank} (std per tile {stats['std']})"
        # Class guidance: move the guidance slider (the second slider readout) to another w and sample
        # again with the same seed: the same count of tiles, other images, the status names the w.
        # The slider starts at the checkpoint's recommended guidance (its metadata): from a guided start
        # go to 0 (no guidance), from 0 to 2, so one run sees both.
        g_readout = sampler.find_elements(By.CSS_SELECTOR, ".widget-readout")[1]
        w_old = float(g_readout.text.strip())
        w_new = "0" if w_old > 0 else "2"
        how = "no guidance" if w_new == "0" else f"guidance {w_new} "
        g_readout.click()
        g_readout.send_keys(Keys.CONTROL, "a")
        g_readout.send_keys(w_new, Keys.ENTER)
        wait.until(lambda d: float(g_readout.text.strip()) == float(w_new))
        first = img.get_attribute("src") or ""
        button.click()
        t2 = time.perf_counter()
        wait.until(lambda d: status.text.startswith("done") and how in status.text)
        print(f"sampled with guidance {w_new} in {time.perf_counter() - t2:.0f} s: {status.text}", flush=True)
        wait.until(lambda d: (img.get_attribute("src") or "") != first
                   and d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img))
        stats = driver.execute_script(TILE_STATS_JS, img, tile, PAD * UPSCALE, args.count, NCOL)
        driver.save_screenshot(str(out / f"07_sampler_w{w_new}.png"))
        assert (stats["w"], stats["h"]) == want, f"second grid of {stats['w']}x{stats['h']} px, want {want}"
        blank = [k for k, s in enumerate(stats["std"]) if s < 3.0]
        assert not blank, f"blank tiles at w = {w_new}: {blank} (std per tile {stats['std']})"
        # The plausibility constraint: guidance 2 and the alpha slider (the third readout) at 0.1, sample
        # again: the status names both, the tiles are there.
        if w_new == "0":
            g_readout.click()
            g_readout.send_keys(Keys.CONTROL, "a")
            g_readout.send_keys("2", Keys.ENTER)
            wait.until(lambda d: float(g_readout.text.strip()) == 2.0)
        a_readout = sampler.find_elements(By.CSS_SELECTOR, ".widget-readout")[2]
        a_readout.click()
        a_readout.send_keys(Keys.CONTROL, "a")
        a_readout.send_keys("0.1", Keys.ENTER)
        wait.until(lambda d: abs(float(a_readout.text.strip()) - 0.1) < 1e-9)
        second = img.get_attribute("src") or ""
        button.click()
        t3 = time.perf_counter()
        wait.until(lambda d: status.text.startswith("done") and "guidance 2 " in status.text
                   and "alpha 0.1" in status.text)
        print(f"sampled with guidance 2, alpha 0.1 in {time.perf_counter() - t3:.0f} s: {status.text}", flush=True)
        wait.until(lambda d: (img.get_attribute("src") or "") != second
                   and d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img))
        stats = driver.execute_script(TILE_STATS_JS, img, tile, PAD * UPSCALE, args.count, NCOL)
        driver.save_screenshot(str(out / "07_sampler_alpha.png"))
        assert (stats["w"], stats["h"]) == want, f"third grid of {stats['w']}x{stats['h']} px, want {want}"
        blank = [k for k, s in enumerate(stats["std"]) if s < 3.0]
        assert not blank, f"blank tiles at alpha 0.1: {blank} (std per tile {stats['std']})"
        print(f"browser test passed in {time.perf_counter() - t0:.0f} s: {args.count} non-blank tiles of "
              f"{tile} px ({stats['w']}x{stats['h']}) with guidance {w_old:g}, {w_new} and 2 at alpha 0.1, "
              f"screenshots {out / '07_sampler.png'}, {out / f'07_sampler_w{w_new}.png'}, "
              f"{out / '07_sampler_alpha.png'}")
        return 0
    except Exception as e:
        if driver is not None:
            try:
                driver.save_screenshot(str(out / "07_sampler_failed.png"))
            except Exception:
                pass
        print(f"FAILED browser test after {time.perf_counter() - t0:.0f} s: {type(e).__name__}: {e}")
        return 1
    finally:
        if driver is not None:
            driver.quit()
        voila.terminate()
        try:
            voila.wait(20)
        except subprocess.TimeoutExpired:
            voila.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
