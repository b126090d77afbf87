"""`internlocal web`: the TUI served to a real headless browser (Debian's chromium-headless-shell over the DevTools
protocol), its token, and its refusal to bind the network without one."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import QUESTION

PACKAGES = ("chromium-headless-shell", "fonts-wqy-microhei")  # the browser, and a CJK font for its screenshots
BROWSER = "chromium-headless-shell"
SHOT_COPY = Path("/tmp/web_shot.png")


# -- the browser ---------------------------------------------------------------------------------------------------


def _installed(package: str) -> bool:
    found = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return found.returncode == 0 and "install ok installed" in found.stdout


@pytest.fixture(scope="session")
def browser_path() -> str:
    """Debian's headless Chromium, installed with apt when missing (skipped only where there is no apt)."""
    missing = [p for p in PACKAGES if not shutil.which("dpkg-query") or not _installed(p)]
    if missing:
        if shutil.which("apt-get") is None:
            pytest.skip(f"apt-get is not available to install {', '.join(missing)}")
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = [*sudo, "apt-get", "install", "-y", "--no-install-recommends", *missing]
        done = subprocess.run(install, capture_output=True, text=True, env=env)
        if done.returncode != 0:  # perhaps stale package lists
            subprocess.run([*sudo, "apt-get", "update"], capture_output=True, text=True, env=env)
            done = subprocess.run(install, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(install)}` failed:\n{(done.stdout + done.stderr)[-2000:]}")
    path = shutil.which(BROWSER)
    assert path is not None, f"{BROWSER} is installed but not on PATH"
    return path


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page (aiohttp's websocket: textual-serve brings aiohttp)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future] = {}
        self.handlers: dict[str, object] = {}
        self.events: list[dict] = []
        self.tasks: set[asyncio.Task] = set()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self.waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                self.events.append(data)
                handler = self.handlers.get(data["method"])
                if handler is not None:
                    task = asyncio.create_task(handler(data["params"]))  # type: ignore[operator]
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        return answer["result"]

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:60]}…: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def key(self, text: str) -> None:
        """One key as a keyboard sends it (xterm.js turns it into the app's stdin)."""
        if text == "\r":
            fields = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
        else:
            fields = {"key": text, "unmodifiedText": text}
        await self.call("Input.dispatchKeyEvent", type="keyDown", text=text, **fields)
        await self.call("Input.dispatchKeyEvent", type="keyUp", **fields)


# textual-serve keeps its xterm.js Terminal inside its bundle; the test's copy of the script also hands it to the page
# (window.__xterm), so the screen can be read from the emulator's buffer (the page draws on a canvas)
XTERM_OPEN = "this.terminal.open(e)"
SCREEN_TEXT = """(() => {
  const t = window.__xterm;
  if (!t) return null;
  const b = t.buffer.active, rows = [];
  for (let i = 0; i < t.rows; i++) {
    const line = b.getLine(b.viewportY + i);
    rows.push(line ? line.translateToString(true) : "");
  }
  return rows.join("\\n");
})()"""


@contextlib.asynccontextmanager
async def browser(path: str, profile: Path):
    """A headless Chromium (its own process group, ended with it) and a DevTools client on its first page."""
    import aiohttp

    proc = subprocess.Popen(
        [
            path,
            "--no-sandbox",  # root here
            "--headless",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--window-size=1280,800",
            "--no-first-run",
            "--disable-background-networking",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, f"{path} exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"{path} did not open its DevTools port"
            await asyncio.sleep(0.1)
        debug_port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{debug_port}/json/list") as answer:
                pages = [t for t in await answer.json() if t["type"] == "page"]
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                tools = DevTools(ws)
                try:
                    yield tools
                finally:
                    tools.reader.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # renderers or helpers that outlived the browser
            os.killpg(proc.pid, signal.SIGKILL)


# -- the server ----------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def web_server(internlocal_bin: str, env: dict[str, str], *args: str, token: str | None = None):
    """`internlocal web` as a subprocess, stopped (SIGTERM: its app sessions end with it) when the block ends."""
    port = free_port()
    env = {k: v for k, v in env.items() if k != "INTERNLOCAL_WEB_TOKEN"}
    command = [internlocal_bin, "web", "--port", str(port), *args] + (["--token", token] if token else [])
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"internlocal web exited with {proc.returncode}: {proc.stdout.read()}"
            assert time.monotonic() < deadline, "internlocal web did not start listening"
            with contextlib.suppress(requests.ConnectionError):
                requests.get(url + "/static/css/xterm.css", timeout=5)
                break
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- the tests -----------------------------------------------------------------------------------------------------


# what shows the Chat screen is up in each language: the sidebar's heading, the prompt's placeholder, the status
# line's "ready"; and the one line `internlocal web` prints
SIGNS = {
    "en": ("Chats", "Ask anything", "ready", "internlocal in the browser at {url}/  (Ctrl-C stops)"),
    "zh-CN": ("对话列表", "随便问", "就绪", "在浏览器中打开 internlocal：{url}/  （Ctrl-C 停止）"),
}


@pytest.mark.slow
@pytest.mark.parametrize("language", list(SIGNS))
async def test_browser_chats_with_the_embedded_model(
    language, browser_path, internlocal_bin, cli_env, services, tmp_path
):
    from internlocal.engines.base import GenerationParams

    heading, placeholder, ready_word, banner = SIGNS[language]
    chat = services.chats.new_chat(params=GenerationParams.greedy(max_tokens=32))  # the chat the app opens
    started = time.monotonic()
    with web_server(internlocal_bin, dict(cli_env, INTERNLOCAL_LANG=language)) as (url, server):
        async with browser(browser_path, tmp_path / "profile") as page:
            port = url.rsplit(":", 1)[1]

            async def hand_over_the_terminal(params: dict) -> None:
                body = await page.call("Fetch.getResponseBody", requestId=params["requestId"])
                script = base64.b64decode(body["body"]).decode() if body["base64Encoded"] else body["body"]
                assert XTERM_OPEN in script, "textual-serve's textual.js changed: the test cannot find its terminal"
                script = script.replace(XTERM_OPEN, f"{XTERM_OPEN},window.__xterm=this.terminal", 1)
                await page.call(
                    "Fetch.fulfillRequest",
                    requestId=params["requestId"],
                    responseCode=200,
                    responseHeaders=[{"name": "Content-Type", "value": "application/javascript"}],
                    body=base64.b64encode(script.encode()).decode(),
                )

            page.handlers["Fetch.requestPaused"] = hand_over_the_terminal
            await page.call(
                "Fetch.enable", patterns=[{"urlPattern": "*/static/js/textual.js", "requestStage": "Response"}]
            )
            await page.call("Network.enable")
            await page.call("Page.enable")
            await page.call("Page.navigate", url=url + "/")

            async def screen_until(predicate, what: str, timeout: float = 90) -> str:
                deadline = time.monotonic() + timeout
                text = ""
                while time.monotonic() < deadline:
                    text = await page.evaluate(SCREEN_TEXT) or ""
                    if predicate(text):
                        return text
                    assert server.poll() is None, f"internlocal web exited: {server.stdout.read()}"
                    await asyncio.sleep(0.25)
                raise AssertionError(f"the page never showed {what}; its screen:\n{text}")

            # the Chat screen: its sidebar, the prompt, and a status line that says ready (the chat is open); in
            # Chinese too (xterm.js holds a double-width character once in its buffer)
            await screen_until(
                lambda s: heading in s and placeholder in s and re.search(rf"·\s+{ready_word}", s) is not None,
                "the Chat screen",
            )
            loaded = time.monotonic() - started
            await page.evaluate("window.__xterm.focus()")
            for ch in QUESTION:
                await page.key(ch)
            await screen_until(lambda s: QUESTION in s, "the typed question")
            await page.key("\r")

            deadline = time.monotonic() + 90
            answer = None
            while answer is None:
                assert time.monotonic() < deadline, "no answer reached the catalog"
                replies = [m for m in services.catalog.messages(chat.id) if m.role == "assistant"]
                answer = replies[-1].content if replies else None
                await asyncio.sleep(0.25)
            assert [m.content for m in services.catalog.messages(chat.id) if m.role == "user"] == [QUESTION]
            assert "Paris" in answer
            await screen_until(lambda s: "Paris" in s, "the answer")
            answered = time.monotonic() - started

            await asyncio.sleep(3)  # the answer's last frames, then the picture
            shot = await page.call("Page.captureScreenshot", format="png")
            requested = [
                e["params"]["request"]["url"] for e in page.events if e["method"] == "Network.requestWillBeSent"
            ]

    printed = server.stdout.read()
    assert server.returncode == 0, printed
    assert printed.splitlines() == [banner.format(url=url)], printed  # no noise
    png = base64.b64decode(shot["data"])
    path = tmp_path / "web.png"
    path.write_bytes(png)
    with contextlib.suppress(OSError):
        (SHOT_COPY if language == "en" else SHOT_COPY.with_name(f"web_shot-{language}.png")).write_bytes(png)
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[0] >= 800 and image.size[1] >= 500
    colors = image.convert("RGB").getcolors(1 << 24)
    assert colors is not None and len(colors) > 16  # text on a screen, not a blank page

    # offline: the page, its script, styles and fonts all come from the server itself (no CDN)
    assert requested and all(u.startswith(f"http://127.0.0.1:{port}/") for u in requested), requested
    assert any(u.endswith(".ttf") for u in requested), requested  # the bundled Roboto Mono
    print(f"Chat screen after {loaded:.1f} s, answer on screen after {answered:.1f} s: {answer!r}", file=sys.stderr)


def test_network_bind_needs_a_token(internlocal_bin, cli_env):
    env = {k: v for k, v in cli_env.items() if k != "INTERNLOCAL_WEB_TOKEN"}
    done = subprocess.run(
        [internlocal_bin, "web", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "set --token (or INTERNLOCAL_WEB_TOKEN), or bind 127.0.0.1" in done.stderr
    assert done.stderr.count("\n") == 1  # one sentence, no traceback


def test_token_guards_every_request(internlocal_bin, cli_env):
    with web_server(internlocal_bin, cli_env, token="s3cret-token") as (url, server):
        port = url.rsplit(":", 1)[1]
        for path in ("/", "/static/js/textual.js", "/ws"):
            refused = requests.get(url + path, timeout=10)
            assert refused.status_code == 401 and "needs its token" in refused.text
        assert requests.get(url + "/?token=wrong", timeout=10).status_code == 401
        assert requests.get(url + "/", cookies={f"internlocal_web_{port}": "wrong"}, timeout=10).status_code == 401

        first = requests.get(url + "/?token=s3cret-token&fontsize=14", allow_redirects=False, timeout=10)
        assert first.status_code == 302 and first.headers["Location"] == "/?fontsize=14"  # the token leaves the bar
        assert first.cookies[f"internlocal_web_{port}"] == "s3cret-token"
        with requests.Session() as browser_like:
            page = browser_like.get(url + "/?token=s3cret-token", timeout=10)  # the redirect, with the cookie
            assert page.status_code == 200 and "textual.js" in page.text
            assert "googleapis" not in page.text  # the bundled fonts instead of Google's
            assert browser_like.get(url + "/static/js/textual.js", timeout=10).status_code == 200
        bearer = requests.get(url + "/", headers={"Authorization": "Bearer s3cret-token"}, timeout=10)
        assert bearer.status_code == 200
    assert server.returncode == 0
    assert "s3cret-token" in server.stdout.read()  # the printed URL carries it


def test_loopback_only_answers_its_own_names_and_pages(internlocal_bin, cli_env):
    with web_server(internlocal_bin, cli_env) as (url, _):
        assert requests.get(url + "/", timeout=10).status_code == 200
        rebound = requests.get(url + "/", headers={"Host": "attacker.example"}, timeout=10)
        assert rebound.status_code == 403  # DNS rebinding
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
        upgrade["Sec-WebSocket-Key"] = base64.b64encode(b"0123456789abcdef").decode()
        foreign = requests.get(url + "/ws", headers={**upgrade, "Origin": "http://attacker.example"}, timeout=10)
        assert foreign.status_code == 403  # another site's page cannot drive the app
