#!/usr/bin/env python3
"""Quick self-check of comfyui_emulator.py (plain script, exits non-zero on failure).

    python3 Tests/Emulator/test_emulator_smoke.py [-v] [-k substring]

Starts the emulator on a free port with a temp data dir, runs every scenario
against it over real HTTP/WebSocket connections, and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "comfyui_emulator.py")
VERBOSE = False


class Failure(AssertionError):
    pass


def check(cond, message="check failed"):
    if not cond:
        raise Failure(message)


def eq(actual, expected, what=""):
    if actual != expected:
        raise Failure(f"{what}: expected {expected!r}, got {actual!r}")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def png_texts(data: bytes) -> dict[str, str]:
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG")
    pos, texts = 8, {}
    while pos < len(data):
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        check(crc == zlib.crc32(tag + body), "bad PNG CRC")
        if tag == b"tEXt":
            key, _, value = body.partition(b"\x00")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        if tag == b"IDAT":
            zlib.decompress(body)
        pos += 12 + length
    check(tag == b"IEND", "PNG does not end with IEND")
    return texts


def png_meta(data: bytes) -> dict:
    return json.loads(png_texts(data)["comfy-emulator"])


def tiny_png(seed: int) -> bytes:
    """A valid 2x2 RGB PNG that differs per seed."""
    raw = b"".join(b"\x00" + bytes([seed % 256, 7, 9] * 2) for _ in range(2))

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def kind(frame) -> str:
    """Short name of a frame for order checks: 'status', 'executing:2', 'bin4', ..."""
    if isinstance(frame, bytes):
        return "bin%d" % struct.unpack(">I", frame[:4])[0]
    t = frame["type"]
    if t in ("executing", "executed") and frame["data"].get("node") is not None:
        return f"{t}:{frame['data']['node']}"
    if t == "progress":
        return f"progress:{frame['data']['node']}:{frame['data']['value']}/{frame['data']['max']}"
    return t


class Emu:
    def __init__(self, *extra_args):
        self.data_dir = tempfile.mkdtemp(prefix="emu-smoke-")
        self.proc = subprocess.Popen(
            [sys.executable, EMULATOR, "--port", "0", "--data-dir", self.data_dir, *extra_args],
            stdout=subprocess.PIPE, stderr=None if VERBOSE else subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        check(line.startswith("READY "), f"bad READY line {line!r}")
        self.port = int(line.split()[1])
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise Failure("emulator did not exit within 5 s of SIGTERM")
        shutil.rmtree(self.data_dir, ignore_errors=True)


class WS:
    """A WebSocket client that records every frame."""

    def __init__(self, session, emu, client_id, feature_flags=False):
        self.session, self.emu, self.client_id, self.feature_flags = session, emu, client_id, feature_flags
        self.frames: list = []
        self.closed = False
        self._event = asyncio.Event()

    async def connect(self):
        url = f"{self.emu.base}/ws" + (f"?clientId={self.client_id}" if self.client_id is not None else "")
        self.ws = await self.session.ws_connect(url)
        if self.feature_flags:
            await self.ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        self._task = asyncio.create_task(self._reader())
        await self.wait_for(lambda f: isinstance(f, dict) and f["type"] == "status" and "sid" in f["data"])
        if self.feature_flags:
            await self.wait_for(lambda f: isinstance(f, dict) and f["type"] == "feature_flags")
        return self

    async def _reader(self):
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self.frames.append(bytes(msg.data))
            self._event.set()
        self.closed = True
        self._event.set()

    async def wait_for(self, pred, timeout=5.0, start=0):
        deadline = time.monotonic() + timeout
        while True:
            for i in range(start, len(self.frames)):
                if pred(self.frames[i]):
                    return i
            if self.closed:
                raise Failure(f"socket {self.client_id} closed while waiting")
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"timeout waiting on {self.client_id}; got {[kind(f) for f in self.frames]}")
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def wait_done(self, prompt_id, timeout=5.0):
        """Index of the end marker executing {node: null, prompt_id}."""
        return await self.wait_for(lambda f: isinstance(f, dict) and f["type"] == "executing"
                                   and f["data"].get("node") is None and f["data"].get("prompt_id") == prompt_id,
                                   timeout)

    def prompt_frames(self, prompt_id):
        """Frames from this prompt's first status(put) up to its end marker."""
        out, started = [], False
        for f in self.frames:
            if isinstance(f, dict) and f["type"] == "execution_start" and f["data"]["prompt_id"] == prompt_id:
                started = True
                # include the two status frames right before
                out = [x for x in self.frames[max(0, self.frames.index(f) - 2):self.frames.index(f)]]
            if started:
                out.append(f)
                if isinstance(f, dict) and f["type"] == "executing" and f["data"].get("node") is None:
                    break
        return out

    async def close(self):
        await self.ws.close()
        await asyncio.sleep(0.05)


async def post_json(session, url, body, raw=None):
    data = raw if raw is not None else json.dumps(body)
    async with session.post(url, data=data) as r:
        return r.status, await r.read(), r.headers


async def get(session, url):
    async with session.get(url) as r:
        return r.status, await r.read(), r.headers


async def submit(session, emu, prompt, client_id=None, **extra):
    body = {"prompt": prompt, **extra}
    if client_id is not None:
        body["client_id"] = client_id
    status, raw, _ = await post_json(session, emu.base + "/prompt", body)
    eq(status, 200, f"POST /prompt {raw[:300]!r}")
    return json.loads(raw)


async def upload(session, emu, content: bytes, name="test.png", subfolder="gw_test", overwrite=None):
    form = aiohttp.FormData()
    form.add_field("image", content, filename=name, content_type="image/png")
    if overwrite is not None:
        form.add_field("overwrite", overwrite)
    form.add_field("subfolder", subfolder)
    async with session.post(emu.base + "/upload/image", data=form) as r:
        return r.status, await r.read()


async def config(session, emu, **values):
    status, raw, _ = await post_json(session, emu.base + "/emulator/config", values)
    eq(status, 200, "POST /emulator/config")
    return json.loads(raw)


async def history(session, emu, prompt_id):
    _, raw, _ = await get(session, f"{emu.base}/history/{prompt_id}")
    return json.loads(raw)


async def wait_history(session, emu, prompt_id, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = await history(session, emu, prompt_id)
        if h:
            return h[prompt_id]
        await asyncio.sleep(0.02)
    raise Failure(f"no history for {prompt_id}")


def invert_ws_prompt(image="gw_test/test.png", out_class="SaveImageWebsocket"):
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": out_class, "inputs": {"images": ["2", 0]}}}


def txt2img_prompt(text="a cat", seed=1, steps=3, out="SaveImage", prefix="smoke/txt"):
    save_inputs = {"images": ["8", 0]}
    if out == "SaveImage":
        save_inputs["filename_prefix"] = prefix
    return {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "emulator.safetensors"}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
            "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 8.0,
                                                        "sampler_name": "euler", "scheduler": "normal",
                                                        "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
                                                        "negative": ["7", 0], "latent_image": ["5", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": out, "inputs": save_inputs}}


# ---------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------

async def t_http_basics(s, emu):
    status, body, headers = await get(s, emu.base + "/queue")
    eq((status, body), (200, b'{"queue_running": [], "queue_pending": []}'), "GET /queue")
    eq(headers["Content-Type"], "application/json; charset=utf-8", "json content type")
    eq((await get(s, emu.base + "/api/prompt"))[1], b'{"exec_info": {"queue_remaining": 0}}', "GET /api/prompt")
    eq((await get(s, emu.base + "/features"))[1],
       b'{"supports_preview_metadata": true, "max_upload_size": 104857600}', "features")
    eq((await get(s, emu.base + "/object_info/Nope"))[1], b"{}", "unknown object_info")
    _, body, _ = await get(s, emu.base + "/object_info/ImageInvert")
    eq(body, b'{"ImageInvert": {"input": {"required": {"image": ["IMAGE"]}}, "input_order": {"required": '
             b'["image"]}, "output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": '
             b'"ImageInvert", "display_name": "Invert Image", "description": "", "python_module": "nodes", '
             b'"category": "image", "output_node": false}}', "object_info ImageInvert")
    _, body, _ = await get(s, emu.base + "/system_stats")
    eq(json.loads(body)["system"]["comfyui_version"], "0.3.64", "version")
    status, body, headers = await post_json(s, emu.base + "/prompt", None, raw="{not json")
    eq((status, body), (500, b"500 Internal Server Error\n\nServer got itself in trouble"), "malformed JSON")
    eq(headers["Content-Type"], "text/plain; charset=utf-8", "500 content type")
    status, body, _ = await post_json(s, emu.base + "/prompt", {"client_id": "abc"})
    eq((status, body), (400, b'{"error": {"type": "no_prompt", "message": "No prompt provided", "details": '
                             b'"No prompt provided", "extra_info": {}}, "node_errors": {}}'), "no_prompt")
    for path, body in (("/interrupt", None), ("/queue", {"delete": ["not-there"]})):
        status, raw, headers = await post_json(s, emu.base + path, body, raw="" if body is None else None)
        eq((status, raw), (200, b""), f"POST {path}")
        check("Content-Type" not in headers, f"{path} must have no Content-Type")
    status, _, _ = await post_json(s, emu.base + "/queue", None, raw="")
    eq(status, 500, "POST /queue empty body")
    async with s.get(emu.base + "/queue", headers={"Origin": "http://evil.example"}) as r:
        eq((r.status, await r.read()), (403, b""), "origin mismatch")
    async with s.get(emu.base + "/ws") as r:
        eq(r.status, 400, "plain GET /ws")
    status, body, _ = await get(s, emu.base + "/history/unknown")
    eq((status, body), (200, b"{}"), "unknown history id")


async def t_upload_rules(s, emu):
    png_a, png_b = tiny_png(1), tiny_png(2)
    eq(await upload(s, emu, png_a, overwrite="true"),
       (200, b'{"name": "test.png", "subfolder": "gw_test", "type": "input"}'), "upload")
    eq(await upload(s, emu, png_a), (200, b'{"name": "test.png", "subfolder": "gw_test", "type": "input"}'),
       "same bytes: duplicate")
    eq(await upload(s, emu, png_b), (200, b'{"name": "test (1).png", "subfolder": "gw_test", "type": "input"}'),
       "different bytes: renamed")
    eq(await upload(s, emu, png_a, subfolder="../.."), (400, b""), "subfolder traversal")
    form = aiohttp.FormData()
    form.add_field("overwrite", "1")
    async with s.post(emu.base + "/upload/image", data=form) as r:
        eq((r.status, await r.read()), (400, b""), "no image field")
        check("Content-Type" not in r.headers, "400 upload has no Content-Type")
    for query, code in (("filename=nope.png&type=input", 404), ("type=input", 404),
                        ("filename=../x.png", 400), ("filename=test.png&type=bogus", 400),
                        ("filename=test.png&subfolder=../../../../etc&type=input", 403)):
        status, body, _ = await get(s, f"{emu.base}/view?{query}")
        eq((status, body), (code, b""), f"/view?{query}")
    status, body, headers = await get(s, f"{emu.base}/view?filename=test.png&subfolder=gw_test&type=input")
    eq((status, body), (200, png_a), "/view input")
    eq(headers["Content-Disposition"], 'filename="test.png"', "Content-Disposition")
    async with s.get(f"{emu.base}/view?filename=test.png&subfolder=gw_test&type=input",
                     headers={"Range": "bytes=0-7"}) as r:
        eq((r.status, await r.read()), (206, png_a[:8]), "Range")


async def t_ws_metadata_run(s, emu):
    png = tiny_png(3)
    await upload(s, emu, png, overwrite="1")
    ws = await WS(s, emu, "client-meta", feature_flags=True).connect()
    eq(ws.frames[0], {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                 "sid": "client-meta"}}, "first frame")
    eq(ws.frames[1], {"type": "feature_flags", "data": {"supports_preview_metadata": True,
                                                        "max_upload_size": 104857600}}, "flags reply")
    resp = await submit(s, emu, invert_ws_prompt(), "client-meta")
    pid = resp["prompt_id"]
    eq(resp["node_errors"], {}, "node_errors")
    await ws.wait_done(pid)
    kinds = [kind(f) for f in ws.frames[2:]]
    eq(kinds, ["status", "status", "execution_start", "execution_cached",
               "progress_state", "executing:1", "progress_state",
               "progress_state", "executing:2", "progress_state",
               "progress_state", "executing:3", "progress_state", "bin4", "progress:3:0/1", "progress_state",
               "execution_success", "status", "executing"], "metadata run order")
    binary = next(f for f in ws.frames if isinstance(f, bytes))
    event, jlen = struct.unpack(">II", binary[:8])
    meta = json.loads(binary[8:8 + jlen])
    eq(meta, {"node_id": "3", "prompt_id": pid, "display_node_id": "3", "parent_node_id": None,
              "real_node_id": "3", "image_type": "image/png"}, "type-4 metadata")
    check(binary[8:8 + jlen] == json.dumps(meta).encode(), "metadata uses json.dumps separators")
    image = binary[8 + jlen:]
    eq(png_meta(image), {"node": "3", "class_type": "SaveImageWebsocket", "texts": [], "seeds": [],
                         "image_sha256": hashlib.sha256(png).hexdigest(), "batch_index": 0}, "tEXt contract")
    frames = {kind(f): f for f in ws.frames if isinstance(f, dict)}
    eq(frames["execution_cached"]["data"]["nodes"], [], "nothing cached on first run")
    check(isinstance(frames["execution_start"]["data"]["timestamp"], int), "timestamp")
    eq(ws.frames[-2], {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}, "status 0")
    ps = [f for f in ws.frames if isinstance(f, dict) and f["type"] == "progress_state"]
    eq(ps[0]["data"]["nodes"]["1"], {"value": 0.0, "max": 1.0, "state": "running", "node_id": "1",
                                     "prompt_id": pid, "display_node_id": "1", "parent_node_id": None,
                                     "real_node_id": "1"}, "progress_state running")
    eq(ps[-1]["data"]["nodes"]["3"]["value"], 1, "SaveImageWebsocket finished value")
    h = await wait_history(s, emu, pid)
    eq((h["outputs"], h["meta"], h["status"]["status_str"], h["prompt"][4]), ({}, {}, "success", ["3"]),
       "SaveImageWebsocket-only history")
    # identical resubmission: upstream cached, SaveImageWebsocket runs again, same bytes
    start = len(ws.frames)
    pid2 = (await submit(s, emu, invert_ws_prompt(), "client-meta"))["prompt_id"]
    await ws.wait_done(pid2)
    kinds = [kind(f) for f in ws.frames[start:]]
    eq(kinds, ["status", "status", "execution_start", "execution_cached", "progress_state", "executing:3",
               "progress_state", "bin4", "progress:3:0/1", "progress_state", "execution_success", "status",
               "executing"], "cached rerun order")
    eq(ws.frames[start + 3]["data"]["nodes"], ["1", "2"], "execution_cached nodes")
    binary2 = next(f for f in ws.frames[start:] if isinstance(f, bytes))
    eq(binary2[8 + jlen:], image, "identical prompt -> identical image bytes")
    await ws.close()


async def t_ws_legacy_batch(s, emu):
    ws = await WS(s, emu, "client-legacy").connect()
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 16, "batch_size": 3, "color": 7}},
              "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
    pid = (await submit(s, emu, prompt, "client-legacy"))["prompt_id"]
    await ws.wait_done(pid)
    kinds = [kind(f) for f in ws.frames[1:]]
    eq(kinds, ["status", "status", "execution_start", "execution_cached",
               "progress_state", "executing:1", "progress_state",
               "progress_state", "executing:2",
               "progress_state", "progress:2:0/3", "bin1",
               "progress_state", "progress:2:1/3", "bin1",
               "progress_state", "progress:2:2/3", "bin1",
               "progress_state", "execution_success", "status", "executing"], "legacy order")
    images = [f for f in ws.frames if isinstance(f, bytes)]
    for i, frame in enumerate(images):
        eq(frame[:8], b"\x00\x00\x00\x01\x00\x00\x00\x02", "type-1 PNG header")
        eq(png_meta(frame[8:])["batch_index"], i, "batch index")
    check(len({f[8:] for f in images}) == 3, "batch images differ")
    await ws.close()


async def t_saveimage_history_view(s, emu):
    ws = await WS(s, emu, "client-save").connect()
    pid = (await submit(s, emu, txt2img_prompt("a cat", 42), "client-save"))["prompt_id"]
    await ws.wait_done(pid)
    kinds = [kind(f) for f in ws.frames]
    order = [k for k in kinds if k.startswith(("executing:", "progress:", "executed"))]
    # ComfyUI's ExecutionList (iterative add_node + output-first pick) gives 4, 5, 7, 6
    eq(order, ["executing:4", "executing:5", "executing:7", "executing:6", "executing:3",
               "progress:3:1/3", "progress:3:2/3", "progress:3:3/3", "executing:8", "executing:9",
               "executed:9"], "txt2img node order")
    executed = next(f for f in ws.frames if isinstance(f, dict) and f["type"] == "executed")
    eq(executed["data"], {"node": "9", "display_node": "9", "output": {"images": [
        {"filename": "txt_00001_.png", "subfolder": "smoke", "type": "output"}]}, "prompt_id": pid}, "executed")
    h = await wait_history(s, emu, pid)
    eq(h["outputs"], {"9": executed["data"]["output"]}, "history outputs")
    eq(h["meta"], {"9": {"node_id": "9", "display_node": "9", "parent_node": None, "real_node_id": "9"}}, "meta")
    eq([m[0] for m in h["status"]["messages"]], ["execution_start", "execution_cached", "execution_success"],
       "history messages")
    status, body, headers = await get(s, f"{emu.base}/view?filename=txt_00001_.png&subfolder=smoke&type=output")
    eq(status, 200, "/view output")
    eq(headers["Content-Type"], "image/png", "view content type")
    with open(os.path.join(emu.data_dir, "output", "smoke", "txt_00001_.png"), "rb") as f:
        eq(body, f.read(), "/view returns the saved file")
    eq(png_meta(body), {"node": "9", "class_type": "SaveImage", "texts": ["a cat", "blurry"], "seeds": [42],
                        "image_sha256": None, "batch_index": 0}, "SaveImage tEXt")
    check("prompt" in png_texts(body), "SaveImage carries the prompt chunk")
    async with s.head(f"{emu.base}/view?filename=txt_00001_.png&subfolder=smoke&type=output") as r:
        eq((r.status, r.headers["Content-Length"]), (200, str(len(body))), "HEAD /view")
    # identical prompt: fully cached, executed re-sent with the same file, nothing written
    start = len(ws.frames)
    pid2 = (await submit(s, emu, txt2img_prompt("a cat", 42), "client-save"))["prompt_id"]
    await ws.wait_done(pid2)
    kinds = [kind(f) for f in ws.frames[start:]]
    eq(kinds, ["status", "status", "execution_start", "execution_cached", "executed:9", "progress_state",
               "execution_success", "status", "executing"], "fully cached order")
    eq(ws.frames[start + 3]["data"]["nodes"], ["4", "5", "6", "7", "3", "8", "9"], "all cached")
    eq(ws.frames[start + 4]["data"]["output"], executed["data"]["output"], "cached executed output")
    eq(sorted(os.listdir(os.path.join(emu.data_dir, "output", "smoke"))), ["txt_00001_.png"], "no new file")
    # a different seed gives a different image and the next counter
    pid3 = (await submit(s, emu, txt2img_prompt("a cat", 43), "client-save"))["prompt_id"]
    await ws.wait_done(pid3)
    h3 = await wait_history(s, emu, pid3)
    eq(h3["outputs"]["9"]["images"][0]["filename"], "txt_00002_.png", "counter")
    _, body3, _ = await get(s, f"{emu.base}/view?filename=txt_00002_.png&subfolder=smoke&type=output")
    eq(png_meta(body3)["seeds"], [43], "seed in tEXt")
    check(body3 != body, "different seed -> different bytes")
    await ws.close()


async def t_sampler_previews(s, emu):
    await config(s, emu, preview_method="latent2rgb")
    try:
        for flags, expected in ((False, ["progress:3:1/2", "bin1", "progress:3:2/2", "bin1"]),
                                (True, ["bin4", "progress:3:1/2", "bin4", "progress:3:2/2"])):
            cid = f"client-sampler-{flags}"
            ws = await WS(s, emu, cid, feature_flags=flags).connect()
            pid = (await submit(s, emu, txt2img_prompt(f"dog {flags}", 5, steps=2, out="PreviewImage"),
                                cid))["prompt_id"]
            await ws.wait_done(pid)
            kinds = [k for k in (kind(f) for f in ws.frames) if k.startswith(("progress:", "bin"))]
            eq(kinds, expected, f"sampler previews flags={flags}")
            jpegs = [f for f in ws.frames if isinstance(f, bytes)]
            for frame in jpegs:
                jpeg = frame[8:] if not flags else frame[8 + struct.unpack(">I", frame[4:8])[0]:]
                if not flags:
                    eq(frame[4:8], b"\x00\x00\x00\x01", "JPEG format code")
                check(jpeg[:4] == b"\xff\xd8\xff\xe0" and jpeg[-2:] == b"\xff\xd9", "fake JPEG framing")
            h = await wait_history(s, emu, pid)
            image = h["outputs"]["9"]["images"][0]
            check(image["type"] == "temp" and image["filename"].startswith("ComfyUI_temp_"), "PreviewImage file")
            _, body, _ = await get(s, f"{emu.base}/view?filename={image['filename']}&type=temp")
            eq(png_meta(body)["class_type"], "PreviewImage", "preview tEXt")
            await ws.close()
    finally:
        await config(s, emu, preview_method="none")


async def t_validation_errors(s, emu):
    bad_class = {"1": {"class_type": "LoadImage", "inputs": {"image": "gw_test/test.png"}},
                 "2": {"class_type": "NoSuchNodeClass", "inputs": {"image": ["1", 0]}},
                 "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}
    status, body, _ = await post_json(s, emu.base + "/prompt", {"prompt": bad_class})
    eq((status, body), (400, b'{"error": {"type": "invalid_prompt", "message": "Cannot execute because node '
                             b'NoSuchNodeClass does not exist.", "details": "Node ID \'#2\'", "extra_info": {}}, '
                             b'"node_errors": {}}'), "bad class body")
    status, body, _ = await post_json(s, emu.base + "/prompt", {"prompt": {"1": {"inputs": {}}}})
    eq(json.loads(body)["error"]["message"], "Cannot execute because a node is missing the class_type property.",
       "missing class_type")
    status, body, _ = await post_json(s, emu.base + "/prompt", {"prompt": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "gw_test/test.png"}}}})
    eq((status, json.loads(body)["error"]["type"]), (400, "prompt_no_outputs"), "no outputs")
    prompt = txt2img_prompt()
    prompt["4"]["inputs"]["ckpt_name"] = "v1-5-pruned-emaonly.safetensors"
    status, body, _ = await post_json(s, emu.base + "/prompt", {"prompt": prompt})
    eq(status, 400, "missing ckpt status")
    eq(json.loads(body), {"error": {"type": "prompt_outputs_failed_validation",
                                    "message": "Prompt outputs failed validation", "details": "",
                                    "extra_info": {}},
                          "node_errors": {"4": {"errors": [{
                              "type": "value_not_in_list", "message": "Value not in list",
                              "details": "ckpt_name: 'v1-5-pruned-emaonly.safetensors' not in "
                                         "['emulator.safetensors']",
                              "extra_info": {"input_name": "ckpt_name", "input_config": [
                                  ["emulator.safetensors"],
                                  {"tooltip": "The name of the checkpoint (model) to load."}],
                                  "received_value": "v1-5-pruned-emaonly.safetensors"}}],
                              "dependent_outputs": ["9"], "class_type": "CheckpointLoaderSimple"}}},
       "missing ckpt body")


async def t_validation_node_errors(s, emu):
    b4 = {"1": {"class_type": "LoadImage", "inputs": {"image": "gw_test/missing.png"}},
          "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nope",
                                                        "width": 99999, "height": -5, "crop": "disabled"}},
          "3": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}},
          "4": {"class_type": "ImageBlur", "inputs": {"image": ["99", 0], "sigma": "abc"}},
          "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}},
          "6": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
          "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}}
    status, body, _ = await post_json(s, emu.base + "/prompt", {"prompt": b4})
    eq(status, 400, "all outputs invalid")
    ne = json.loads(body)["node_errors"]
    eq(sorted(ne), ["1", "2", "4", "6"], "node_errors keys")
    eq([e["type"] for e in ne["1"]["errors"]], ["custom_validation_failed"], "LoadImage missing file")
    eq(ne["1"]["errors"][0]["details"], "image - Invalid image file: gw_test/missing.png", "LoadImage details")
    eq(ne["1"]["dependent_outputs"], ["3", "5", "7"], "dependent outputs (ComfyUI quirk: appended per failure)")
    eq(sorted(e["type"] for e in ne["2"]["errors"]),
       ["value_bigger_than_max", "value_not_in_list", "value_smaller_than_min"], "ImageScale errors")
    eq(ne["4"]["errors"][0]["type"], "exception_during_inner_validation", "missing link")
    eq(ne["4"]["errors"][0]["details"], "'99'", "KeyError details")
    eq(ne["4"]["errors"][0]["extra_info"]["input_name"], "images", "reported on consumer input")
    eq([e["type"] for e in ne["6"]["errors"]], ["required_input_missing"], "required input")
    eq(ne["6"]["errors"][0]["details"], "color", "missing color")
    bad_int = {"1": {"class_type": "EmptyImage", "inputs": {"width": "wide", "height": 8, "batch_size": 1,
                                                             "color": 0}},
               "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
    status, body, _ = await post_json(s, emu.base + "/prompt", {"prompt": bad_int})
    err = json.loads(body)["node_errors"]["1"]["errors"][0]
    eq((status, err["type"], err["message"]), (400, "invalid_input_type",
                                               "Failed to convert an input value to a INT value"), "INT conversion")


async def t_partial_valid(s, emu):
    ws = await WS(s, emu, "client-partial").connect()
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "gw_test/test.png"}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}},
              "4": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                            "width": 99999, "height": 10, "crop": "disabled"}},
              "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}}}
    resp = await submit(s, emu, prompt, "client-partial")
    eq(resp["node_errors"], {"4": {"errors": [{
        "type": "value_bigger_than_max", "message": "Value 99999 bigger than max of 16384", "details": "width",
        "extra_info": {"input_name": "width", "input_config": ["INT", {"default": 512, "min": 0, "max": 16384,
                                                                       "step": 1}], "received_value": 99999}}],
        "dependent_outputs": ["5"], "class_type": "ImageScale"}}, "partial node_errors")
    await ws.wait_done(resp["prompt_id"])
    h = await wait_history(s, emu, resp["prompt_id"])
    eq(h["prompt"][4], ["3"], "only the valid output runs")
    check(not any(kind(f) in ("executing:4", "executing:5") for f in ws.frames), "invalid branch not run")
    await ws.close()


async def t_execution_error(s, emu):
    ws = await WS(s, emu, "client-err").connect()
    await config(s, emu, fail_node_class="ImageInvert")
    try:
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                               "color": 1}},
                  "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                  "3": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}}}
        pid = (await submit(s, emu, prompt, "client-err"))["prompt_id"]
        end = await ws.wait_done(pid)
    finally:
        await config(s, emu, fail_node_class=None)
    kinds = [kind(f) for f in ws.frames[1:end + 1]]
    eq(kinds[-6:], ["progress_state", "progress_state", "executing:2", "execution_error", "status", "executing"],
       "error order")
    err = ws.frames[end - 2]["data"]
    eq({k: err[k] for k in ("prompt_id", "node_id", "node_type", "executed", "exception_message",
                            "exception_type", "current_inputs", "current_outputs")},
       {"prompt_id": pid, "node_id": "2", "node_type": "ImageInvert", "executed": ["1"],
        "exception_message": "emulated failure in ImageInvert\n", "exception_type": "RuntimeError",
        "current_inputs": {"image": ["<emulated IMAGE from node 1>"]}, "current_outputs": ["1", "2", "3"]},
       "execution_error data")
    check(isinstance(err["traceback"], list) and isinstance(err["timestamp"], int), "traceback/timestamp")
    h = await wait_history(s, emu, pid)
    eq((h["status"]["status_str"], h["status"]["completed"], h["status"]["messages"][-1][0], h["outputs"]),
       ("error", False, "execution_error", {}), "error history")
    # LoadImage of a non-image fails like PIL
    await upload(s, emu, b"this is not an image", name="notimage.png", overwrite="1")
    pid = (await submit(s, emu, invert_ws_prompt("gw_test/notimage.png"), "client-err"))["prompt_id"]
    end = await ws.wait_done(pid)
    eq(ws.frames[end - 2]["data"]["exception_type"], "PIL.UnidentifiedImageError", "not an image")
    await ws.close()


async def t_interrupt(s, emu):
    ws = await WS(s, emu, "client-int").connect()
    await config(s, emu, node_delay_ms=150)
    try:
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                               "color": 2}},
                  "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
                  "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
                  "4": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["3", 0]}}}
        pid = (await submit(s, emu, prompt, "client-int"))["prompt_id"]
        queued = (await submit(s, emu, invert_ws_prompt(), "client-int"))["prompt_id"]
        await ws.wait_for(lambda f: kind(f) == "executing:1")
        # targeted at a pending prompt: ignored
        eq((await post_json(s, emu.base + "/interrupt", {"prompt_id": queued}))[:2], (200, b""), "interrupt")
        await asyncio.sleep(0.05)
        eq((await post_json(s, emu.base + "/interrupt", {"prompt_id": pid}))[:2], (200, b""), "interrupt")
        end = await ws.wait_done(pid)
        kinds = [kind(f) for f in ws.frames[:end + 1]]
        eq(kinds[-5:], ["progress_state", "executing:2", "execution_interrupted", "status", "executing"],
           "interrupt at next node boundary")
        eq({k: v for k, v in ws.frames[end - 2]["data"].items() if k != "timestamp"},
           {"prompt_id": pid, "node_id": "2", "node_type": "ImageBlur", "executed": ["1"]}, "interrupted data")
        await ws.wait_done(queued)
        eq((await wait_history(s, emu, queued))["status"]["status_str"], "success", "next prompt unaffected")
        eq((await wait_history(s, emu, pid))["status"]["messages"][-1][0], "execution_interrupted", "history")
        _, raw, _ = await get(s, emu.base + "/emulator/stats")
        eq(json.loads(raw)["interrupts"][-2:], [{"prompt_id": queued}, {"prompt_id": pid}], "stats interrupts")
    finally:
        await config(s, emu, node_delay_ms=0)
    await ws.close()


async def t_queue_delete_and_front(s, emu):
    ws = await WS(s, emu, "client-q").connect()
    await config(s, emu, hang=True)
    a = await submit(s, emu, invert_ws_prompt(), "client-q")
    b = await submit(s, emu, invert_ws_prompt(), "client-q")
    c = await submit(s, emu, invert_ws_prompt(), "client-q", front=True, prompt_id="my-front-id")
    eq(c["prompt_id"], "my-front-id", "caller-chosen prompt_id")
    eq(c["number"], -(b["number"] + 1), "front -> negative number")
    _, raw, _ = await get(s, emu.base + "/queue")
    queue = json.loads(raw)
    eq(([x[1] for x in queue["queue_pending"]][0], queue["queue_running"]), ("my-front-id", []), "front first")
    eq(len(queue["queue_pending"][0]), 5, "queue tuple")
    eq((await post_json(s, emu.base + "/queue", {"delete": [b["prompt_id"]]}))[:2], (200, b""), "delete")
    _, raw, _ = await get(s, emu.base + "/prompt")
    eq(json.loads(raw), {"exec_info": {"queue_remaining": 2}}, "queue_remaining after delete")
    eq(await history(s, emu, a["prompt_id"]), {}, "hang: no history")
    await config(s, emu, hang=False)
    await ws.wait_done(a["prompt_id"])
    order = [f["data"]["prompt_id"] for f in ws.frames if isinstance(f, dict) and f["type"] == "execution_start"]
    eq(order, ["my-front-id", a["prompt_id"]], "execution order")
    eq(await history(s, emu, b["prompt_id"]), {}, "deleted prompt never appears")
    _, raw, _ = await get(s, emu.base + "/emulator/stats")
    eq(json.loads(raw)["queue_deletes"][-1], b["prompt_id"], "stats queue_deletes")
    await ws.close()


async def t_no_client_and_midrun(s, emu):
    await upload(s, emu, tiny_png(3), overwrite="1")
    bystander = await WS(s, emu, "bystander").connect()
    await config(s, emu, node_delay_ms=100)
    try:
        pid = (await submit(s, emu, invert_ws_prompt()))["prompt_id"]  # no client_id
        await wait_history(s, emu, pid)
        await asyncio.sleep(0.05)
        kinds = {kind(f) for f in bystander.frames}
        check("bin1" in kinds and "progress_state" in kinds and "progress:3:0/1" in kinds, "broadcast frames")
        check(not any(k.startswith(("executing", "execution_", "executed")) for k in kinds),
              f"no per-prompt events without client_id: {kinds}")
        # mid-run connect of the prompt's client
        uncached = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                                 "color": 12345}},
                    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                    "3": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}}}
        pid = (await submit(s, emu, uncached, "late-client"))["prompt_id"]
        await asyncio.sleep(0.15)
        late = await WS(s, emu, "late-client").connect()
        await late.wait_for(lambda f: True, start=1)
        eq(late.frames[1]["type"], "executing", "replay after status")
        check(set(late.frames[1]["data"]) == {"node"}, "replayed executing has only node")
        await late.wait_done(pid)
        await late.close()
    finally:
        await config(s, emu, node_delay_ms=0)
    await bystander.close()


async def t_drop_ws_after_binary(s, emu):
    ws = await WS(s, emu, "client-drop").connect()
    other = await WS(s, emu, "client-other").connect()
    await config(s, emu, drop_ws_after_binary=1)
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 3}},
              "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
    pid = (await submit(s, emu, prompt, "client-drop"))["prompt_id"]
    h = await wait_history(s, emu, pid)
    eq(h["status"]["status_str"], "success", "prompt finished despite the drop")
    await asyncio.sleep(0.1)
    check(ws.closed and other.closed, "every socket dropped")
    eq(sum(isinstance(f, bytes) for f in ws.frames), 1, "exactly one binary frame before the drop")
    check(not any(kind(f) == "execution_success" for f in ws.frames), "nothing after the drop")
    eq((await config(s, emu))["drop_ws_after_binary"], None, "setting reset")


async def t_orphan_bug(s, emu):
    x1 = await WS(s, emu, "X").connect()
    x2 = await WS(s, emu, "X").connect()
    y = await WS(s, emu, "Y").connect()
    pid = (await submit(s, emu, invert_ws_prompt(), "X"))["prompt_id"]
    await x2.wait_done(pid)
    await asyncio.sleep(0.05)
    eq(len(x1.frames), 1, "X#1 gets nothing after being replaced")
    eq({kind(f) for f in y.frames}, {"status"}, "Y gets status only")
    await x1.close()  # older socket closes: pops X's entry -> X#2 orphaned
    n2, ny = len(x2.frames), len(y.frames)
    pid = (await submit(s, emu, invert_ws_prompt(), "X"))["prompt_id"]
    await wait_history(s, emu, pid)
    await asyncio.sleep(0.1)
    eq(len(x2.frames), n2, "orphaned X#2 gets nothing, not even status")
    check(len(y.frames) > ny, "Y still gets status")
    _, raw, _ = await get(s, emu.base + "/emulator/stats")
    stats = json.loads(raw)
    check("X" not in stats["sockets"] and "X" in stats["open_sockets"], f"stats sockets {stats}")
    x3 = await WS(s, emu, "X").connect()
    pid = (await submit(s, emu, invert_ws_prompt(), "X"))["prompt_id"]
    await x3.wait_done(pid)
    for w in (x2, x3, y):
        await w.close()


async def t_http_status_and_refuse_ws(s, emu):
    await config(s, emu, http_status=502)
    status, body, _ = await get(s, emu.base + "/queue")
    eq((status, body), (502, b"502: Bad Gateway"), "http_status fault")
    await config(s, emu, http_status=None, refuse_ws=True)
    try:
        await s.ws_connect(emu.base + "/ws?clientId=r")
        raise Failure("refuse_ws did not refuse")
    except aiohttp.WSServerHandshakeError as err:
        eq(err.status, 503, "refuse_ws status")
    await config(s, emu, refuse_ws=False)


async def t_restart(s, emu):
    ws = await WS(s, emu, "client-restart").connect()
    await config(s, emu, hang=True)
    await submit(s, emu, invert_ws_prompt(), "client-restart")
    eq((await post_json(s, emu.base + "/emulator/restart", {}))[0], 200, "restart")
    await asyncio.sleep(0.1)
    check(ws.closed, "restart drops sockets")
    _, raw, _ = await get(s, emu.base + "/queue")
    eq(json.loads(raw), {"queue_running": [], "queue_pending": []}, "queue cleared")
    _, raw, _ = await get(s, emu.base + "/history")
    eq(raw, b"{}", "history cleared")
    await config(s, emu, hang=False)
    resp = await submit(s, emu, invert_ws_prompt())
    eq(resp["number"], 0, "number counter reset")
    await wait_history(s, emu, resp["prompt_id"])
    _, raw, _ = await get(s, emu.base + "/emulator/stats")
    stats = json.loads(raw)
    eq((stats["prompts_received"], stats["prompts_executed"]), (1, 1), "stats reset")


async def t_benchmark_smoke(s, emu):
    ws = await WS(s, emu, "client-bench").connect()
    t0 = time.perf_counter()
    ids = [(await submit(s, emu, invert_ws_prompt(), "client-bench"))["prompt_id"] for _ in range(100)]
    await ws.wait_done(ids[-1], timeout=20)
    elapsed = time.perf_counter() - t0
    done = [f for f in ws.frames if isinstance(f, dict) and f["type"] == "execution_success"]
    eq(len(done), 100, "100 prompts")
    print(f"    100 sequentially posted prompts in {elapsed * 1000:.0f} ms")
    await ws.close()


SCENARIOS = [t_http_basics, t_upload_rules, t_ws_metadata_run, t_ws_legacy_batch, t_saveimage_history_view,
             t_sampler_previews, t_validation_errors, t_validation_node_errors, t_partial_valid, t_execution_error, t_interrupt,
             t_queue_delete_and_front, t_no_client_and_midrun, t_drop_ws_after_binary, t_orphan_bug,
             t_http_status_and_refuse_ws, t_benchmark_smoke, t_restart]


async def run_all(selected) -> int:
    emu = Emu()
    failures = 0
    try:
        async with aiohttp.ClientSession() as session:
            for scenario in selected:
                t0 = time.perf_counter()
                try:
                    await asyncio.wait_for(scenario(session, emu), 30)
                    print(f"ok   {scenario.__name__} ({(time.perf_counter() - t0) * 1000:.0f} ms)")
                except Exception:
                    failures += 1
                    print(f"FAIL {scenario.__name__}")
                    traceback.print_exc()
    finally:
        emu.stop()
    return failures


def main() -> int:
    global VERBOSE
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", action="store_true", help="show emulator stderr")
    parser.add_argument("-k", default="", help="run scenarios whose name contains this")
    args = parser.parse_args()
    VERBOSE = args.v
    selected = [f for f in SCENARIOS if args.k in f.__name__]
    failures = asyncio.run(run_all(selected))
    print(f"{len(selected) - failures}/{len(selected)} scenarios passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
