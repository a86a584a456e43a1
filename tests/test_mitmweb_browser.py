"""mitmweb in a real browser: headless Chromium (Debian's package), driven over the DevTools
protocol with aiohttp's websocket client, shows every gateway call explained, and no key."""

import asyncio
import base64
import itertools
import json
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import CHICAGO_KEY
from openai import DefaultHttpxClient, OpenAI
from processes import REPO, Simulator, free_port, start_mitmweb

WEB_PASSWORD = "browser-test-password"
# The comment column, where the gateway explains each call, before the long paths.
WEB_COLUMNS = ("icon", "method", "status", "comment", "path", "size", "time")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1400,800",
]


def chromium() -> str:
    """Chromium, installed by the repo's own script when missing; a skip says why not."""
    if not shutil.which("chromium"):
        result = subprocess.run(
            ["bash", str(REPO / "scripts" / "install-browser")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode or not shutil.which("chromium"):
            pytest.skip(f"Chromium could not be installed: {result.stderr.strip()[-300:]}")
    return shutil.which("chromium") or "chromium"


class DevTools:
    """The few DevTools-protocol calls the test needs, over one page's websocket."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        self.websocket, self.ids = websocket, itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        await self.websocket.send_json({"id": message_id, "method": method, "params": params})
        async for message in self.websocket:
            data = json.loads(message.data)
            if data.get("id") == message_id:
                if "error" in data:
                    raise RuntimeError(data["error"])
                return data["result"]
        raise RuntimeError("DevTools connection closed")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        return result["result"].get("value")


def start_browser(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    profile = tmp_path / "chromium-profile"
    process = subprocess.Popen(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text().strip():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("Chromium did not open its DevTools port")
        time.sleep(0.1)
    return process, int(port_file.read_text().split()[0])


async def look_at_mitmweb(devtools_port: int, web_url: str, screenshot: Path) -> dict[str, Any]:
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.get(f"http://127.0.0.1:{devtools_port}/json/list") as answer:
            page = next(t for t in await answer.json() if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as websocket:
            tools = DevTools(websocket)
            await tools.call("Page.enable")
            await tools.call("Page.navigate", url=web_url)
            deadline = time.monotonic() + 30
            while "gomodel oracle xai.grok-4 200" not in (
                text := await tools.evaluate("document.body ? document.body.innerText : ''") or ""
            ):
                if time.monotonic() > deadline:
                    shot = await tools.call("Page.captureScreenshot", format="png")
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                    pytest.fail(f"the flow list never showed the comments; page text: {text!r}")
                await asyncio.sleep(0.3)
            flows = await tools.evaluate("fetch('/flows').then(r => r.text())")
            streamed = next(
                f["id"] for f in json.loads(flows) if "text/event-stream" in json.dumps(f)
            )
            seen = {
                "text": await tools.evaluate("document.body.innerText"),
                "html": await tools.evaluate("document.documentElement.outerHTML"),
                "flows": flows,
                "stream view": await tools.evaluate(
                    f"fetch('/flows/{streamed}/response/content/auto.json').then(r => r.text())"
                ),
            }
            await tools.evaluate(  # widen the comment column to its content, for the screenshot
                "document.querySelector('th.col-comment .col-resize-handle')"
                ".dispatchEvent(new MouseEvent('dblclick', {bubbles: true}))"
            )
            await asyncio.sleep(0.3)
            shot = await tools.call("Page.captureScreenshot", format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            return seen


def test_mitmweb_explains_every_gateway_call_and_shows_no_key(
    tmp_path: Path, chicago: Simulator
) -> None:
    web_port = free_port()
    mitmweb = start_mitmweb(
        tmp_path,
        chicago.oracle_env("xai.grok-4,openai.gpt-oss-20b"),
        web_port,
        WEB_PASSWORD,
        *(f"--set=web_columns={column}" for column in WEB_COLUMNS),
        ca=chicago.ca,
    )
    browser = None
    try:
        ways_in = {
            "direct": (f"{mitmweb.url}/v1", None, True),
            "http_proxy": ("http://gomodel.local/v1", mitmweb.proxy, True),
            "https_proxy": (
                "https://gomodel.local/v1",
                mitmweb.proxy,
                ssl.create_default_context(cafile=str(mitmweb.ca)),
            ),
        }
        for base_url, proxy, verify in ways_in.values():
            api = OpenAI(
                base_url=base_url,
                api_key="client-key",
                max_retries=0,
                http_client=DefaultHttpxClient(trust_env=False, proxy=proxy, verify=verify),
            )
            api.chat.completions.create(
                model="xai.grok-4", messages=[{"role": "user", "content": "hi"}]
            )
            list(
                api.chat.completions.create(
                    model="xai.grok-4", stream=True, messages=[{"role": "user", "content": "go"}]
                )
            )
        api.models.list()
        with pytest.raises(Exception):  # noqa: B017 - an error flow, to be marked
            api.chat.completions.create(model="missing.model", messages=[])
        browser, devtools_port = start_browser(tmp_path)
        screenshot = Path(os.environ.get("GOMODEL_SCREENSHOT", tmp_path / "mitmweb.png"))
        seen = asyncio.run(
            look_at_mitmweb(
                devtools_port,
                f"http://127.0.0.1:{web_port}/?token={WEB_PASSWORD}",
                screenshot,
            )
        )
    finally:
        if browser:
            browser.kill()
            browser.wait()
        mitmweb.stop()

    text = seen["text"]
    # A plain call and a stream through each way in, each showing where it really went.
    assert text.count("gomodel oracle xai.grok-4 200") == 6
    assert "gomodel models 200" in text
    assert "gomodel chat/completions 404 model_not_found" in text
    flows = json.loads(seen["flows"])
    assert any(f["marked"] for f in flows)  # the error flow
    calls = [f for f in flows if f.get("comment", "").startswith("gomodel oracle")]
    oracle = chicago.url.removeprefix("https://").split(":")
    assert len(calls) == 6
    assert {(f["request"]["host"], str(f["request"]["port"])) for f in calls} == {tuple(oracle)}
    clients = {c.split("client: POST ")[1].split(" ")[0] for c in (f["comment"] for f in calls)}
    assert clients == {
        f"{mitmweb.url}/v1/chat/completions",
        "http://gomodel.local/v1/chat/completions",
        "https://gomodel.local/v1/chat/completions",
    }
    assert "gomodel-relay" not in seen["flows"] and "gomodel-relay" not in text
    stream_view = json.loads(seen["stream view"])
    assert stream_view["view_name"] == "GoModel" and "data: " in stream_view["text"]
    for page_data in (seen["text"], seen["html"], seen["flows"]):
        assert CHICAGO_KEY not in page_data and "client-key" not in page_data
    assert screenshot.stat().st_size > 20_000
