#!/usr/bin/env python3
"""The Comfy Gateway benchmark client (driven by scripts/bench.sh; Python 3.11 + aiohttp).

Each subcommand measures one thing against servers bench.sh has already started and writes
its figures as JSON to --out; `report` turns those files into BENCHMARKS.md.

    latency   POST /api/generate through nginx vs. the same prompt sent straight to ComfyUI
    wrk       requests/s of GET /healthz (FastCGI) and of a static /output_images/ file (wrk)
    sketch    session WebSocket sketch_update -> POST /prompt on ComfyUI
    sessions  concurrent idle session WebSockets, the app's RSS before/after
    multi     concurrent /api/generate jobs over N backends: jobs/s, backends' idle gaps
    jobs      POST /api/jobs: 202 latency one at a time, jobs accepted per second in a burst
    prefill   fills a stopped gateway's job database with finished and queued jobs
    style     writes the benchmark's img2img style workflow (the tests' one)
    report    BENCHMARKS.md from the JSON files
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import signal
import statistics
import struct
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import aiohttp

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: list[float]) -> dict:
    ms = [s * 1000.0 for s in seconds]
    return {"n": len(ms), "p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
            "min": min(ms) if ms else None, "max": max(ms) if ms else None,
            "mean": sum(ms) / len(ms) if ms else None}


def write_json(path: str, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
    print(f"  -> {path}", file=sys.stderr)


def txt2img(seed: int, text: str = "a lighthouse at dusk", steps: int = 2) -> dict:
    """The original generate API's txt2img graph the tests use, output node 9 = SaveImageWebsocket."""
    def link(node: str, slot: int) -> list:
        return [node, slot]
    return {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
            "model": link("4", 0), "positive": link("6", 0), "negative": link("7", 0), "latent_image": link("5", 0)}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "emulator.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": link("4", 1)}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": link("4", 1)}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": link("3", 0), "vae": link("4", 2)}},
        "9": {"class_type": "SaveImageWebsocket", "inputs": {"images": link("8", 0)}},
    }


def sketch_style(text: str = "a house on a hill") -> dict:
    """Tests/FCGIAppTests/Support/Sketches.swift style(): img2img, LoadImage titled `sketch`."""
    def link(node: str, slot: int) -> list:
        return [node, slot]
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "emulator.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": link("1", 1)}, "_meta": {"title": "positive"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": link("1", 1)}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "sketch"}},
        "5": {"class_type": "VAEEncode", "inputs": {"pixels": link("4", 0), "vae": link("1", 2)}},
        "6": {"class_type": "KSampler", "inputs": {
            "seed": 42, "steps": 3, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.6,
            "model": link("1", 0), "positive": link("2", 0), "negative": link("3", 0), "latent_image": link("5", 0)}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": link("6", 0), "vae": link("1", 2)}},
        "8": {"class_type": "SaveImageWebsocket", "inputs": {"images": link("7", 0)}},
    }


def sketch_png(seed: int, size: int = 64) -> bytes:
    """A valid grayscale PNG whose pixels depend on seed."""
    raw = bytearray()
    for y in range(size):
        raw.append(0)
        raw.extend(((x * 7 + y * 13 + seed * 31) & 0xFF) for x in range(size))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of one process (all its threads), from /proc/<pid>/stat."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nginx_pids(master: int | None) -> list[int]:
    if not master:
        return []
    try:
        return [master] + [int(c) for c in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return [master]


def cpu_snapshot(args) -> dict:
    own = os.times()
    return {"app": cpu_seconds(getattr(args, "app_pid", None)),
            "nginx": sum(cpu_seconds(p) or 0 for p in nginx_pids(getattr(args, "nginx_pid", None))),
            "emulator": cpu_seconds(getattr(args, "emulator_pid", None)),
            "client": own.user + own.system}


def cpu_per_request_ms(before: dict, after: dict, requests: int) -> dict:
    return {k: (after[k] - before[k]) * 1000.0 / requests if after[k] is not None and before[k] is not None else None
            for k in before}


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def nginx_workers_rss(master: int | None) -> int | None:
    if not master:
        return None
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return None
    values = [rss_kib(int(c)) for c in children]
    return sum(v for v in values if v)


class Seeds:
    """Unique KSampler seeds: every prompt really runs (the emulator caches like ComfyUI)."""
    def __init__(self, start: int):
        self.value = start

    def next(self) -> int:
        self.value += 1
        return self.value


# --------------------------------------------------------------------------------------------
# 1. latency: gateway vs direct
# --------------------------------------------------------------------------------------------


class DirectClient:
    """A minimal ComfyUI client (like ComfyUI's script_examples/websockets_api_example.py):
    one WebSocket with its clientId opened up front, then per prompt POST /prompt with that
    client_id and read the socket until `executing` node=null for the prompt, keeping the
    SaveImageWebsocket image frame (the image arrives on the socket: nothing left to fetch)."""

    def __init__(self, http: aiohttp.ClientSession, base: str):
        self.http = http
        self.base = base
        self.client_id = uuid.uuid4().hex
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        self.ws = await self.http.ws_connect(f"{self.base}/ws?clientId={self.client_id}", max_msg_size=0)

    async def run(self, workflow: dict) -> bytes:
        async with self.http.post(f"{self.base}/prompt", json={"prompt": workflow, "client_id": self.client_id}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"/prompt {r.status}: {body}")
        prompt_id = body["prompt_id"]
        image = None
        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                image = msg.data[8:]
            elif msg.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                data = event.get("data") or {}
                if event.get("type") == "execution_error" and data.get("prompt_id") == prompt_id:
                    raise RuntimeError(f"execution error: {data.get('exception_message')}")
                if event.get("type") == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
            else:
                raise RuntimeError(f"ComfyUI WebSocket ended: {msg.type}")
        if not image:
            raise RuntimeError("no image frame")
        return image


async def gateway_generate(http: aiohttp.ClientSession, gateway: str, workflow: dict) -> str:
    async with http.post(f"{gateway}/api/generate", json={"workflow_data": workflow, "output_node_id": "9"}) as r:
        body = await r.json(content_type=None)
        if r.status != 200:
            raise RuntimeError(f"/api/generate {r.status}: {body}")
        return body["url"]


async def cmd_latency(args) -> None:
    seeds = Seeds(1_000_000)
    results: dict = {"requests": args.requests, "concurrency": args.concurrency, "runs": []}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
        async def gw_once() -> float:
            workflow = txt2img(seeds.next())
            t0 = time.perf_counter()
            url = await gateway_generate(http, args.gateway, workflow)
            elapsed = time.perf_counter() - t0
            results.setdefault("sample_url", url)
            return elapsed

        async def direct_once(client: DirectClient) -> float:
            workflow = txt2img(seeds.next())
            t0 = time.perf_counter()
            await client.run(workflow)
            return time.perf_counter() - t0

        for concurrency in args.concurrency:
            clients = [DirectClient(http, args.emulator) for _ in range(concurrency)]
            await asyncio.gather(*(c.open() for c in clients))
            for _ in range(args.warmup):  # connections, caches of the unchanging nodes
                await gw_once()
                await direct_once(clients[0])
            gateway_times: list[float] = []
            direct_times: list[float] = []
            walls = {}
            cpu: dict = {}
            if concurrency == 1:
                # Interleaved, so drift (emulator history growth, CPU frequency) hits both alike.
                # Strictly sequential, so the emulator's records map 1:1 onto the requests: after
                # each one, read when its POST /prompt arrived (last_prompt_at); at the end, its
                # execution's start and end (GET /emulator/executions, in order).
                loop_start = time.time()
                stamps: dict[str, list] = {"gateway": [], "direct": []}
                for _ in range(args.requests):
                    for name in ("gateway", "direct"):
                        t0_wall = time.time()
                        elapsed = await (gw_once() if name == "gateway" else direct_once(clients[0]))
                        (gateway_times if name == "gateway" else direct_times).append(elapsed)
                        prompt_at = (await emulator_stats(http, args.emulator))["last_prompt_at"]
                        stamps[name].append((t0_wall, prompt_at, t0_wall + elapsed))
                walls = {"gateway": sum(gateway_times), "direct": sum(direct_times)}
                async with http.get(f"{args.emulator}/emulator/executions") as r:
                    executions = [e for e in (await r.json())["executions"] if e["start"] >= loop_start]
                executions.sort(key=lambda e: e["start"])
                if len(executions) == 2 * args.requests:
                    breakdown = {}
                    for offset, name in ((0, "gateway"), (1, "direct")):
                        parts: dict[str, list[float]] = {"to_prompt": [], "queued": [], "executing": [], "to_client": []}
                        for (t0, prompt_at, t_end), e in zip(stamps[name], executions[offset::2]):
                            parts["to_prompt"].append(prompt_at - t0)
                            parts["queued"].append(e["start"] - prompt_at)
                            parts["executing"].append(e["end"] - e["start"])
                            parts["to_client"].append(t_end - e["end"])
                        breakdown[name] = {k: summary_ms(v) for k, v in parts.items()}
                    results["breakdown"] = breakdown
                else:
                    results["breakdown_skipped"] = f"{len(executions)} executions for {2 * args.requests} requests"
            else:
                for name, times in (("direct", direct_times), ("gateway", gateway_times)):
                    remaining = [args.requests]

                    async def worker(index: int) -> None:
                        while remaining[0] > 0:
                            remaining[0] -= 1
                            if name == "gateway":
                                times.append(await gw_once())
                            else:
                                times.append(await direct_once(clients[index]))
                    cpu_before = cpu_snapshot(args)
                    t0 = time.perf_counter()
                    await asyncio.gather(*(worker(i) for i in range(concurrency)))
                    walls[name] = time.perf_counter() - t0
                    cpu[name] = cpu_per_request_ms(cpu_before, cpu_snapshot(args), args.requests)
            for client in clients:
                await client.ws.close()
            run = {"concurrency": concurrency,
                   "gateway": summary_ms(gateway_times), "direct": summary_ms(direct_times),
                   "gateway_rps": len(gateway_times) / walls["gateway"],
                   "direct_rps": len(direct_times) / walls["direct"], "cpu_ms_per_request": cpu}
            results["runs"].append(run)
            print(f"  c={concurrency}: gateway p50 {run['gateway']['p50']:.2f} p99 {run['gateway']['p99']:.2f} ms, "
                  f"direct p50 {run['direct']['p50']:.2f} p99 {run['direct']['p99']:.2f} ms", file=sys.stderr)
    write_json(args.out, results)


async def cmd_parse(args) -> None:
    """Request-body cost: /api/generate with workflows of growing size whose output_node_id
    does not exist, so the gateway parses and checks the body, answers 400
    unknown_output_node and never calls ComfyUI (checked with the emulator's counter)."""
    results: dict = {"requests": args.requests, "runs": []}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        received_before = (await emulator_stats(http, args.emulator))["prompts_received"]
        for extra in args.extra_nodes:
            workflow = txt2img(1)
            for i in range(extra):
                workflow[str(100 + i)] = {"class_type": "CLIPTextEncode",
                                          "inputs": {"text": "a detailed prompt word " * 4, "clip": ["4", 1]},
                                          "_meta": {"title": f"node {i}"}}
            body = json.dumps({"workflow_data": workflow, "output_node_id": "99999"}).encode()
            t0 = time.perf_counter()
            for _ in range(20):
                json.loads(body)
            python_ms = (time.perf_counter() - t0) / 20 * 1000
            times, statuses = [], set()
            for i in range(args.requests + 3):
                t0 = time.perf_counter()
                async with http.post(f"{args.gateway}/api/generate", data=body,
                                     headers={"Content-Type": "application/json"}) as r:
                    answer = await r.json(content_type=None)
                    statuses.add((r.status, (answer.get("error") or {}).get("code")))
                if i >= 3:
                    times.append(time.perf_counter() - t0)
            run = {"nodes": len(workflow), "body_kib": len(body) / 1024,
                   "answers": sorted(f"{status} {code}" for status, code in statuses),
                   "latency": summary_ms(times), "python_json_loads_ms": python_ms}
            results["runs"].append(run)
            print(f"  {run['nodes']} nodes, {run['body_kib']:.1f} KiB: p50 {run['latency']['p50']:.2f} ms "
                  f"({statuses})", file=sys.stderr)
        results["prompts_sent_to_comfyui"] = (await emulator_stats(http, args.emulator))["prompts_received"] - received_before
    write_json(args.out, results)


# --------------------------------------------------------------------------------------------
# 2. wrk
# --------------------------------------------------------------------------------------------


def parse_wrk(text: str) -> dict:
    def number(pattern: str) -> float | None:
        match = re.search(pattern, text)
        return float(match.group(1)) if match else None

    def duration_ms(token: str) -> float:
        match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", token)
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    latency = {}
    for label in ("50", "90", "99"):
        match = re.search(rf"^\s+{label}%\s+(\S+)", text, re.M)
        if match:
            latency[f"p{label}"] = duration_ms(match.group(1))
    requests = re.search(r"(\d+) requests in", text)
    return {"rps": number(r"Requests/sec:\s+([\d.]+)"), "requests": int(requests.group(1)) if requests else None,
            "non_2xx": int(number(r"Non-2xx or 3xx responses: (\d+)") or 0),
            "socket_errors": re.search(r"Socket errors:.*", text).group(0) if "Socket errors" in text else None,
            "latency_ms": latency}


def cmd_wrk(args) -> None:
    rounds = 3
    results = {"command": f"wrk -t{args.threads} -c{args.connections} -d{args.duration} --latency URL", "rounds": rounds, "runs": []}
    pairs = [(("styles", f"{args.gateway}/api/styles"), ("styles-anchor", f"{args.anchor}/api/styles")),
             (("healthz", f"{args.gateway}/healthz"), ("healthz-anchor", f"{args.anchor}/healthz"))]
    # The gateway and the anchor in turns, each first in every other round, over several rounds:
    # one run's ratio drifts with the machine (±15% between runs here); the median of the rounds' does less.
    targets = []
    for round_ in range(rounds):
        for pair in pairs:
            targets += [(round_, *target) for target in (pair if round_ % 2 == 0 else pair[::-1])]
    targets.append((0, "static", f"{args.gateway}{args.static_path}"))
    for round_, name, url in targets:
        command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}", "--latency", url]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        # bench.sh stops a step with SIGTERM: take wrk along.
        signal.signal(signal.SIGTERM, lambda *_: (process.terminate(), sys.exit(143)))
        output, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
        parsed = parse_wrk(output)
        parsed.update(name=name, round=round_, url=url.replace(args.gateway, "").replace(args.anchor, ""))
        results["runs"].append(parsed)
        print(f"  {name} (round {round_ + 1}): {parsed['rps']} req/s, non-2xx {parsed['non_2xx']}", file=sys.stderr)
    write_json(args.out, results)


# --------------------------------------------------------------------------------------------
# 3. drawing sessions
# --------------------------------------------------------------------------------------------


async def emulator_stats(http: aiohttp.ClientSession, emulator: str) -> dict:
    async with http.get(f"{emulator}/emulator/stats") as r:
        return await r.json()


async def cmd_sketch(args) -> None:
    """One painter: sketch_update, wait for `completed`, read the emulator's last_prompt_at.
    The emulator stamps time.time() on receiving POST /prompt; the client stamps time.time()
    just before sending the frame (same clock), so polling adds no error."""
    ws_url = args.gateway.replace("http://", "ws://") + "/api/ws/bench-sketch-" + uuid.uuid4().hex[:8]
    to_prompt: list[float] = []
    to_completed: list[float] = []
    errors: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        ws = await http.ws_connect(ws_url, max_msg_size=0)
        previous = (await emulator_stats(http, args.emulator))["last_prompt_at"]
        for i in range(args.warmup + args.updates):
            png = sketch_png(seed=i + 1)
            message = json.dumps({"type": "sketch_update", "style": "realistic",
                                  "sketch_data": "data:image/png;base64," + __import__("base64").b64encode(png).decode()})
            t0_wall = time.time()
            t0 = time.perf_counter()
            await ws.send_str(message)
            while True:
                msg = await ws.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"session socket ended: {msg.type}")
                event = json.loads(msg.data)
                if event.get("status") == "completed":
                    break
                if event.get("status") == "error":
                    errors.append(event.get("message", ""))
                    break
            done = time.perf_counter() - t0
            stamp = (await emulator_stats(http, args.emulator))["last_prompt_at"]
            if stamp is None or stamp == previous:
                errors.append("no new POST /prompt seen")
                continue
            previous = stamp
            if i >= args.warmup:
                to_prompt.append(stamp - t0_wall)
                to_completed.append(done)
        await ws.close()
    result = {"updates": args.updates, "to_prompt": summary_ms(to_prompt), "to_completed": summary_ms(to_completed),
              "errors": errors[:10], "error_count": len(errors)}
    print(f"  sketch->prompt p50 {result['to_prompt']['p50']:.2f} p99 {result['to_prompt']['p99']:.2f} ms; "
          f"->completed p50 {result['to_completed']['p50']:.2f} ms; errors {len(errors)}", file=sys.stderr)
    write_json(args.out, result)


async def cmd_sessions(args) -> None:
    """Opens idle session WebSockets in steps (through nginx; optionally also straight to the
    app's WebSocket unix socket) and reads the app's RSS at each step."""
    results: dict = {"steps": [], "app_pid": args.app_pid}
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    readers: list[asyncio.Task] = []

    def snapshot(label: str, attempted: int, opened: int, failures: dict, seconds: float) -> dict:
        alive = sum(1 for ws in sockets if not ws.closed)
        step = {"label": label, "attempted": attempted, "opened": opened, "alive_after_hold": alive,
                "failures": failures, "open_seconds": round(seconds, 2),
                "app_rss_kib": rss_kib(args.app_pid), "app_fds": fd_count(args.app_pid),
                "nginx_workers_rss_kib": nginx_workers_rss(args.nginx_pid)}
        results["steps"].append(step)
        print(f"  {label}: {alive}/{attempted} alive, app RSS {step['app_rss_kib']} KiB, failures {failures}",
              file=sys.stderr)
        return step

    def closed_snapshot(label: str) -> None:
        step = {"label": label, "closed": True, "app_rss_kib": rss_kib(args.app_pid), "app_fds": fd_count(args.app_pid)}
        results["steps"].append(step)
        print(f"  {label}: app RSS {step['app_rss_kib']} KiB, fds {step['app_fds']}", file=sys.stderr)

    async def close_all(label: str) -> None:
        for ws in sockets:
            await ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        sockets.clear()
        readers.clear()
        await asyncio.sleep(args.hold)
        closed_snapshot(label)
        # The gateway gives memory back a second after sockets close, and again ten seconds later.
        await asyncio.sleep(12)
        closed_snapshot(f"{label}, 12 s later")

    async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _ in ws:  # answers the gateway's pings; idle otherwise
            pass

    async def open_many(http: aiohttp.ClientSession, base: str, prefix: str, count: int) -> tuple[int, dict]:
        failures: dict[str, int] = {}
        gate = asyncio.Semaphore(64)
        opened = [0]

        async def one(i: int) -> None:
            async with gate:
                try:
                    ws = await http.ws_connect(f"{base}/api/ws/{prefix}-{i}", heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=5))
                except Exception as err:  # noqa: BLE001 - counted and reported
                    key = type(err).__name__ + (f" {err.status}" if hasattr(err, "status") else "")
                    failures[key] = failures.get(key, 0) + 1
                    return
                sockets.append(ws)
                readers.append(asyncio.create_task(drain(ws)))
                opened[0] += 1
        await asyncio.gather(*(one(i) for i in range(count)))
        return opened[0], failures

    results["before"] = {"app_rss_kib": rss_kib(args.app_pid), "app_fds": fd_count(args.app_pid),
                         "nginx_workers_rss_kib": nginx_workers_rss(args.nginx_pid)}
    print(f"  before: app RSS {results['before']['app_rss_kib']} KiB", file=sys.stderr)
    timeout = aiohttp.ClientTimeout(total=None, connect=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
        ws_base = args.gateway.replace("http://", "ws://")
        total = 0
        for target in args.counts:
            t0 = time.perf_counter()
            opened, failures = await open_many(http, ws_base, f"idle{target}", target - total)
            await asyncio.sleep(args.hold)
            snapshot(f"nginx {target}", target, total + opened, failures, time.perf_counter() - t0)
            total = target
        # nginx's error log says why connections were refused, if they were.
        if args.nginx_error_log and os.path.exists(args.nginx_error_log):
            lines = [l for l in Path(args.nginx_error_log).read_text(errors="replace").splitlines()
                     if "worker_connections" in l or "Too many open files" in l]
            results["nginx_limit_messages"] = len(lines)
            results["nginx_limit_sample"] = lines[0][:300] if lines else None
        await close_all("closed all (nginx)")

    if args.direct_socket and args.direct_count:
        # The app alone, without nginx's connection limit: straight to its WebSocket unix socket.
        connector = aiohttp.UnixConnector(path=args.direct_socket, limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            t0 = time.perf_counter()
            opened, failures = await open_many(http, "ws://gateway", "direct", args.direct_count)
            await asyncio.sleep(args.hold)
            snapshot(f"app socket {args.direct_count}", args.direct_count, opened, failures, time.perf_counter() - t0)
            await close_all("closed all (app socket)")
    write_json(args.out, results)


# --------------------------------------------------------------------------------------------
# 4. multi-backend throughput
# --------------------------------------------------------------------------------------------


async def cmd_multi(args) -> None:
    seeds = Seeds(5_000_000 + 100_000 * len(args.emulator))
    latencies: list[float] = []
    failures: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600),
                                     connector=aiohttp.TCPConnector(limit=0)) as http:
        remaining = [args.jobs]

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                t0 = time.perf_counter()
                try:
                    await gateway_generate(http, args.gateway, txt2img(seeds.next(), steps=args.steps))
                    latencies.append(time.perf_counter() - t0)
                except Exception as err:  # noqa: BLE001
                    failures.append(str(err)[:200])
        start_wall = time.time()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        wall = time.perf_counter() - t0
        backends = []
        for url in args.emulator:
            async with http.get(f"{url}/emulator/executions") as r:
                runs = [e for e in (await r.json())["executions"] if e["start"] >= start_wall]
            runs.sort(key=lambda e: e["start"])
            gaps = [b["start"] - a["end"] for a, b in zip(runs, runs[1:])]
            busy = sum(e["end"] - e["start"] for e in runs)
            backends.append({"url": url, "jobs": len(runs), "gaps": gaps,
                             "job_ms": summary_ms([e["end"] - e["start"] for e in runs]),
                             "busy_fraction": busy / wall if wall else None})
    all_gaps = [g for b in backends for g in b["gaps"]]
    result = {"backends": len(args.emulator), "jobs": args.jobs, "concurrency": args.concurrency,
              "wall_seconds": wall, "jobs_per_second": len(latencies) / wall, "failures": len(failures),
              "failure_sample": failures[:3], "latency": summary_ms(latencies), "gap": summary_ms(all_gaps),
              "per_backend": [{k: v for k, v in b.items() if k != "gaps"} | {"gap": summary_ms(b["gaps"])}
                              for b in backends]}
    print(f"  {len(args.emulator)} backend(s): {result['jobs_per_second']:.2f} jobs/s, "
          f"jobs per backend {[b['jobs'] for b in backends]}, gap p50 {result['gap']['p50']} ms, "
          f"failures {len(failures)}", file=sys.stderr)
    write_json(args.out, result)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def machine() -> dict:
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
    model = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())

    def version(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "unknown"
    return {"nproc": os.cpu_count(), "ram_gib": total_kib / 1024 / 1024,
            "cpu": model.group(1).strip() if model else platform.processor(),
            "kernel": platform.release(), "nginx": version(["nginx", "-v"]),
            "python": platform.python_version(), "aiohttp": aiohttp.__version__,
            "wrk": version(["wrk", "-v"]).split(" [")[0].split(" Copyright")[0]}


async def cmd_jobs(args) -> None:
    """The job store's write path: every 202 means the job is in SQLite (WAL, synchronous=NORMAL)."""
    seeds = Seeds(2_000_000)
    timeout = aiohttp.ClientTimeout(total=60)

    def body() -> dict:
        return {"workflow_data": txt2img(seeds.next()), "output_node_id": "9"}

    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
        async def submit() -> tuple[float, int]:
            t0 = time.perf_counter()
            async with http.post(f"{args.gateway}/api/jobs", json=body()) as r:
                await r.read()
                return time.perf_counter() - t0, r.status

        for _ in range(args.warmup):
            await submit()
        sequential = [await submit() for _ in range(args.requests)]
        sem = asyncio.Semaphore(args.concurrency)

        async def limited() -> tuple[float, int]:
            async with sem:
                return await submit()
        t0 = time.perf_counter()
        burst = await asyncio.gather(*(limited() for _ in range(args.burst)))
        wall = time.perf_counter() - t0
    write_json(args.out, {
        "requests": args.requests,
        "sequential": summary_ms([t for t, _ in sequential]),
        "sequential_non_202": sum(1 for _, status in sequential if status != 202),
        "burst": {
            "requests": args.burst, "concurrency": args.concurrency, "wall_s": wall,
            "accepted_per_second": sum(1 for _, status in burst if status == 202) / wall,
            "latency": summary_ms([t for t, _ in burst]),
            "non_202": sum(1 for _, status in burst if status != 202),
        },
    })


async def cmd_images(args) -> None:
    """Output conversion (png as made vs webp and jpeg) and input images by URL vs in a form."""
    timeout = aiohttp.ClientTimeout(total=120)
    seeds = Seeds(3_000_000)
    results: dict = {"image_size": args.image_size, "requests": args.requests, "formats": {}, "inputs": {}}
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async def generate(kind: str) -> tuple[float, int]:
            body = {"workflow_data": txt2img(seeds.next()), "output_node_id": "9", "output_format": kind, "quality": 90}
            t0 = time.perf_counter()
            async with http.post(f"{args.gateway}/api/generate", json=body) as r:
                answer = await r.json(content_type=None)
                elapsed = time.perf_counter() - t0
                if r.status != 200:
                    raise RuntimeError(f"/api/generate {r.status}: {answer}")
            async with http.get(f"{args.gateway}{answer['url']}") as image:
                size = len(await image.read())
            return elapsed, size

        for kind in ("png", "webp", "jpeg"):
            for _ in range(args.warmup):
                await generate(kind)
            runs = [await generate(kind) for _ in range(args.requests)]
            results["formats"][kind] = {"latency": summary_ms([t for t, _ in runs]), "bytes": statistics.median(b for _, b in runs)}

        # Small outputs again: the emulator's image making would drown the input's cost.
        async with http.post(f"{args.emulator}/emulator/config", json={"image_size": 16}) as r:
            await r.read()
        sketch = sketch_png(5, size=512)
        Path(args.image_dir, "input.png").write_bytes(sketch)
        workflow = sketch_style()

        def fresh_graph() -> dict:
            """The style with a new seed: every request runs, none is cached."""
            return {**workflow, "6": {**workflow["6"], "inputs": {**workflow["6"]["inputs"], "seed": seeds.next()}}}

        async def timed_generate(label: str, **request) -> float:
            t0 = time.perf_counter()
            async with http.post(f"{args.gateway}/api/generate", **request) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{label} {r.status}")
            return time.perf_counter() - t0

        async def by_url() -> float:
            body = {"workflow_data": fresh_graph(), "output_node_id": "8", "input_images": {"4": f"{args.image_server}/input.png"}}
            return await timed_generate("by URL", json=body)

        async def by_form() -> float:
            form = aiohttp.FormData()
            form.add_field("workflow_data", json.dumps(fresh_graph()))
            form.add_field("output_node_id", "8")
            form.add_field("4", sketch, filename="input.png", content_type="image/png")
            return await timed_generate("by form", data=form)

        for name, once in (("form", by_form), ("url", by_url)):
            for _ in range(args.warmup):
                await once()
            results["inputs"][name] = summary_ms([await once() for _ in range(args.requests)])
        results["inputs"]["image_bytes"] = len(sketch)
    write_json(args.out, results)


def cmd_keyed(args) -> None:
    """The cost of a key check: wrk on GET /api/jobs/{id}, once before any key exists, once with a key."""
    header = ["-H", f"Authorization: Bearer {args.secret}"] if args.secret else []
    command = ["wrk", "-t2", "-c16", f"-d{args.duration}", "--latency"] + header + [f"{args.gateway}/api/jobs/{args.job}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    write_json(args.out, {"command": f"wrk -t2 -c16 -d{args.duration} --latency [-H 'Authorization: Bearer <key>'] URL", **parse_wrk(output)})


def cmd_prefill(args) -> None:
    """Adds finished and queued jobs straight into a stopped gateway's database (its own schema)."""
    import sqlite3
    db = sqlite3.connect(args.database)
    now = int(time.time() * 1000)
    workflow = json.dumps(txt2img(1))
    rows = []
    for i in range(args.finished):
        result = json.dumps({"url": f"/output_images/{i:064x}.png", "filename": f"{i:064x}.png", "content_type": "image/png"})
        rows.append((str(uuid.uuid4()), "async", "completed", workflow, "9", "127.0.0.1", now - 3_600_000 + i, now - 3_600_000 + i,
                     now - 3_599_000 + i, 1.0, result))
    for i in range(args.queued):
        rows.append((str(uuid.uuid4()), "async", "queued", workflow, "9", "127.0.0.1", now + i, None, None, 0.0, None))
    db.executemany(
        "INSERT INTO jobs (id, kind, status, workflow, output_node_id, owner, created_at, started_at, finished_at, progress, result) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    queued_id = rows[-args.queued][0] if args.queued else None
    write_json(args.out, {"finished": args.finished, "queued": args.queued, "finished_id": rows[0][0], "queued_id": queued_id,
                          "database_bytes": os.path.getsize(args.database)})


def cmd_report(args) -> None:
    d = Path(args.results)

    def load(name: str) -> dict | None:
        path = d / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None
    latency, wrk, sketch, sessions = load("latency"), load("wrk"), load("sketch"), load("sessions")
    sketch_shared = load("sketch-shared")
    parse = load("parse")
    multi = [m for m in (load(f"multi-{n}") for n in (1, 2, 4)) if m]
    jobs, restart = load("jobs"), load("restart")
    keyed = {"open": load("keyed-open"), "keyed": load("keyed-key")}
    config = json.loads((d / "config.json").read_text()) if (d / "config.json").exists() else {}
    m = machine()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out: list[str] = []
    w = out.append
    w("# Benchmarks\n")
    w(f"Produced by `make bench` (it builds `swift build -c release` and runs `scripts/bench.sh` with that "
      f"binary; `Tests/Bench/bench.py` is the client). This run: `{args.command}`.\n")
    w(f"- Date: {now}; commit {config.get('commit', 'unknown')}")
    w(f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']:.1f} GiB RAM, Linux {m['kernel']}; "
      f"{m['nginx']}; Python {m['python']}, aiohttp {m['aiohttp']}; {m['wrk']}")
    w(f"- Everything on one machine: the client, nginx (`worker_processes auto` = {m['nproc']} workers), "
      f"FCGIApp (`make bench`: the release build), and the ComfyUI emulator(s) (`Tests/Emulator/comfyui_emulator.py`, one "
      f"Python process each) share the {m['nproc']} CPUs, so the figures are upper bounds on overhead, "
      f"not a GPU server's numbers. `ulimit -n` = {config.get('ulimit_n', '?')} (bench.sh raises the soft limit to the hard one). Load average (1/5/15 min) "
      f"when the run started: {config.get('loadavg_start', '?')}, at the end: {' '.join(open('/proc/loadavg').read().split()[:3])} "
      "(anything else running on the machine shows up as noise, mostly in the p99 columns).")
    w(f"- Gateway settings: `FCGI_THREADS={config.get('fcgi_threads', '?')}`, `LOG_LEVEL={config.get('log_level', '?')}`, "
      "nginx config as shipped in `nginx/` (rendered by `FCGIApp run`), local image storage.\n")

    if latency:
        w("## 1. Added latency of `POST /api/generate`\n")
        w("The emulator does no work (node delay 0, sampler step 0). Every request carries the same "
          "7-node txt2img prompt (output node 9 = `SaveImageWebsocket`) with a fresh KSampler seed, so "
          "KSampler, VAEDecode and SaveImageWebsocket run every time on both paths.\n")
        w("- **gateway**: `POST /api/generate` through nginx (keep-alive client connection) → FastCGI → "
          "FCGIApp → emulator, answer `{\"url\": ...}` after the image is hashed and stored under `OUTPUT_DIR`.")
        w("- **direct**: what a minimal ComfyUI client does (ComfyUI's `websockets_api_example.py`): "
          "a WebSocket `/ws?clientId=` opened once per client beforehand, then per request `POST /prompt` "
          "with that `client_id` and read the socket until `executing` with `node: null` for the prompt; "
          "the image bytes arrive as the binary frame on that socket (nothing else to fetch, nothing stored).\n")
        w(f"{latency['requests']} requests per path and concurrency level; concurrency 1 interleaves "
          "gateway and direct requests; concurrency N runs N clients (each direct client with its own "
          "clientId/socket). Latency in ms, client-measured.\n")
        w("| concurrency | gateway p50 | gateway p99 | direct p50 | direct p99 | added p50 | added p99 | gateway req/s | direct req/s |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for run in latency["runs"]:
            g, dd = run["gateway"], run["direct"]
            w(f"| {run['concurrency']} | {fmt(g['p50'], 2)} | {fmt(g['p99'], 2)} | {fmt(dd['p50'], 2)} | "
              f"{fmt(dd['p99'], 2)} | {fmt(g['p50'] - dd['p50'], 2)} | {fmt(g['p99'] - dd['p99'], 2)} | "
              f"{fmt(run['gateway_rps'])} | {fmt(run['direct_rps'])} |")
        w("\n\"added\" = gateway percentile minus direct percentile. The emulator runs one prompt at a time, "
          "so at concurrency > 1 most of either path's latency is waiting in the emulator's queue.\n")
        cpu_runs = [r for r in latency["runs"] if r.get("cpu_ms_per_request")]
        if cpu_runs:
            w("CPU time per request (ms, from `/proc/<pid>/stat` utime+stime over the concurrency-"
              f"{cpu_runs[0]['concurrency']} run of each path; 10 ms clock ticks averaged over "
              f"{latency['requests']} requests):\n")
            w("| path | FCGIApp | nginx | emulator | bench client | total |")
            w("|---|---:|---:|---:|---:|---:|")
            for name in ("gateway", "direct"):
                c = cpu_runs[0]["cpu_ms_per_request"].get(name) or {}
                total = sum(v for v in c.values() if v is not None)
                w(f"| {name} | {fmt(c.get('app'), 2)} | {fmt(c.get('nginx'), 2)} | {fmt(c.get('emulator'), 2)} | "
                  f"{fmt(c.get('client'), 2)} | {fmt(total, 2)} |")
            w("\nOn the direct row FCGIApp and nginx serve no request; what FCGIApp spends there is its "
              "share of the emulator's traffic anyway (ComfyUI broadcasts `status` messages to every "
              "WebSocket, the gateway's own included).\n")
        breakdown = latency.get("breakdown")
        if breakdown:
            w("Where the time goes at concurrency 1 (same clock everywhere: the client's send and receive "
              "times, the emulator's `last_prompt_at` and its per-prompt execution start/end from "
              "`GET /emulator/executions`):\n")
            w("| phase | gateway p50 | direct p50 | gateway p99 | direct p99 |")
            w("|---|---:|---:|---:|---:|")
            labels = {"to_prompt": "client sends → emulator receives `POST /prompt`",
                      "queued": "`POST /prompt` received → execution starts",
                      "executing": "execution (3 nodes run, 4 cached)",
                      "to_client": "execution ends → client has the answer"}
            for key, label in labels.items():
                g, dd = breakdown["gateway"][key], breakdown["direct"][key]
                w(f"| {label} | {fmt(g['p50'], 2)} | {fmt(dd['p50'], 2)} | {fmt(g['p99'], 2)} | {fmt(dd['p99'], 2)} |")
            w("")

    if parse:
        w("### Request body size\n")
        w("`POST /api/generate` with a workflow of growing size (the txt2img graph plus N extra "
          "`CLIPTextEncode` nodes) whose `output_node_id` does not exist: the gateway reads and parses "
          "the body, answers `400 unknown_output_node` and never calls ComfyUI "
          f"(prompts that reached the emulator: {parse['prompts_sent_to_comfyui']}). Sequential, "
          f"{parse['requests']} requests each, client-measured; Python's `json.loads` of the same body "
          "for scale.\n")
        w("| nodes | body KiB | p50 ms | p99 ms | answer | Python json.loads ms |")
        w("|---:|---:|---:|---:|---|---:|")
        for run in parse["runs"]:
            w(f"| {run['nodes']} | {fmt(run['body_kib'])} | {fmt(run['latency']['p50'], 2)} | "
              f"{fmt(run['latency']['p99'], 2)} | {', '.join(run['answers'])} | {fmt(run['python_json_loads_ms'], 2)} |")
        small, large = parse["runs"][0], parse["runs"][-1]
        if large["body_kib"] > small["body_kib"]:
            slope = (large["latency"]["p50"] - small["latency"]["p50"]) / (large["body_kib"] - small["body_kib"])
            w(f"\nFrom {fmt(small['body_kib'])} to {fmt(large['body_kib'])} KiB the gateway's answer takes "
              f"{slope:.2f} ms more per KiB of workflow JSON.")
        w("")

    if wrk:
        w("## 2. Requests/s through nginx\n")
        w(f"`{wrk['command']}` (wrk on the same machine, HTTP/1.1 keep-alive to nginx).\n")
        w("| request | served by | req/s | p50 ms | p99 ms | non-2xx |")
        w("|---|---|---:|---:|---:|---:|")
        # Each target's median run over the rounds (by requests/s); the ratios are per round.
        by_name: dict[str, list[dict]] = {}
        for run in wrk["runs"]:
            by_name.setdefault(run["name"], []).append(run)
        medians = {name: sorted(runs, key=lambda run: run["rps"] or 0)[len(runs) // 2] for name, runs in by_name.items()}
        for name, run in medians.items():
            if name == "static":
                who, url = "nginx from disk (`alias`, sendfile)", "/output_images/<sha256>.png"
            elif name.endswith("-anchor"):
                who, url = "nginx → FastCGI → the 30-line libfcgi anchor (fixed answer)", run["url"]
            else:
                who, url = "nginx → FastCGI → FCGIApp", run["url"]
            w(f"| `GET {url}` | {who} | {fmt(run['rps'], 0)} | {fmt(run['latency_ms'].get('p50'), 2)} | "
              f"{fmt(run['latency_ms'].get('p99'), 2)} | {sum(r['non_2xx'] for r in by_name[name])} |")
        rounds = wrk.get("rounds", 1)
        if rounds > 1:
            w(f"\nThe gateway's and the anchor's runs take turns over {rounds} rounds (each first in every other "
              "round); the table shows each target's median run, the ratios below are the median of the rounds' ratios.")
        for name in ("styles", "healthz"):
            gateway = {run.get("round", 0): run["rps"] for run in by_name.get(name, [])}
            anchor = {run.get("round", 0): run["rps"] for run in by_name.get(f"{name}-anchor", [])}
            ratios = sorted(gateway[r] / anchor[r] for r in gateway if anchor.get(r))
            if ratios:
                each = ", ".join(f"{ratio:.2f}" for ratio in (gateway[r] / anchor[r] for r in sorted(gateway) if anchor.get(r)))
                w(f"\n`GET {medians[name]['url']}`: the gateway makes **{ratios[len(ratios) // 2]:.2f}×** the anchor's requests/s "
                  f"(rounds: {each}; same nginx configuration, same FCGI_THREADS, one connection per request).")
        for run in wrk["runs"]:
            if run.get("socket_errors"):
                w(f"\n{run['name']}: {run['socket_errors']}\n")
        w("")

    if sketch or sessions:
        w("## 3. Drawing sessions\n")
    if sketch:
        w("One painter on `ws://…/api/ws/<id>` through nginx sends `{\"type\":\"sketch_update\","
          "\"sketch_data\":\"data:image/png;base64,…\",\"style\":\"realistic\"}` (a fresh 64×64 PNG each "
          "time), waits for `completed`, then sends the next. **sketch → prompt** = the emulator's "
          "`last_prompt_at` (its clock when `POST /prompt` arrived) minus the client's clock just before "
          "sending the frame; it includes decoding/validating the sketch, `POST /upload/image` and "
          "building the prompt. **sketch → completed** = until the `completed` message arrived (the "
          "emulator doing no work). The style is the tests' img2img workflow "
          "(`Tests/FCGIAppTests/Support/Sketches.swift`), installed as `WORKFLOW_DIR/realistic.json`.\n")
        w("| sketch reaches ComfyUI by | updates | sketch → prompt p50 | p99 | sketch → completed p50 | p99 | errors |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for how, run in (("`POST /upload/image`", sketch), ("`COMFYUI_INPUT_DIR`", sketch_shared)):
            if not run:
                continue
            s1, s2 = run["to_prompt"], run["to_completed"]
            w(f"| {how} | {s1['n']} | {fmt(s1['p50'], 2)} ms | {fmt(s1['p99'], 2)} ms | {fmt(s2['p50'], 2)} ms | "
              f"{fmt(s2['p99'], 2)} ms | {run['error_count']} |")
        if sketch_shared:
            w("\nThe second row is a gateway beside ComfyUI with `COMFYUI_INPUT_DIR` set to the emulator's "
              "input folder: the sketch is written straight into it (over the session's file, in place) "
              "in place of `POST /upload/image`, whose multipart parsing into a temporary file is most "
              "of the first row's time, on ComfyUI's side.")
        w("")
    if sessions:
        before = sessions["before"]
        w("Idle sessions: WebSockets opened (64 handshakes at a time) to distinct `/api/ws/<id>` and held "
          f"open, nothing sent; figures read after a {config.get('hold', '?')} s hold, and once more 12 s after "
          "closing (the gateway trims freed memory 1 s and 11 s after sockets close). App RSS = `VmRSS` of "
          "FCGIApp from `/proc/<pid>/status`.\n")
        w("| step | opened / attempted | still open after hold | app RSS MiB | app fds | nginx workers RSS MiB | refused |")
        w("|---|---:|---:|---:|---:|---:|---|")
        w(f"| before | – | – | {fmt((before['app_rss_kib'] or 0) / 1024)} | {before['app_fds']} | "
          f"{fmt((before.get('nginx_workers_rss_kib') or 0) / 1024)} | |")
        for step in sessions["steps"]:
            if step.get("closed"):
                w(f"| {step['label']} | | | {fmt((step['app_rss_kib'] or 0) / 1024)} | {step['app_fds']} | | |")
                continue
            refused = ", ".join(f"{k}: {v}" for k, v in step["failures"].items()) or "none"
            nginx_rss = step.get("nginx_workers_rss_kib")
            w(f"| {step['label']} | {step['opened']} / {step['attempted']} | {step['alive_after_hold']} | "
              f"{fmt((step['app_rss_kib'] or 0) / 1024)} | {step['app_fds']} | "
              f"{fmt(nginx_rss / 1024) if nginx_rss and step['label'].startswith('nginx') else '–'} | {refused} |")
        steps = [s for s in sessions["steps"] if s["label"].startswith("nginx")]
        if steps and before["app_rss_kib"]:
            top = steps[-1]
            if top["alive_after_hold"]:
                per = (top["app_rss_kib"] - before["app_rss_kib"]) / top["alive_after_hold"]
                w(f"\nApp memory per idle session through nginx: about {per:.1f} KiB.")
        w("")
        limit = sessions.get("nginx_limit_messages")
        conf = (d / "nginx.conf").read_text() if (d / "nginx.conf").exists() else ""

        def directive(name: str) -> str | None:
            match = re.search(rf"^\s*{name}\s+([^;]+);", conf, re.M)
            return match.group(1).strip() if match else None
        workers = directive("worker_processes") or "?"
        worker_count = m["nproc"] if workers == "auto" else int(workers) if workers.isdigit() else None
        connections = directive("worker_connections")
        rlimit = directive("worker_rlimit_nofile")
        ceiling = (f"{worker_count} × {connections} / 2 ≈ {worker_count * int(connections) // 2:,}"
                   if worker_count and connections and connections.isdigit() else "?")
        w(f"Limits: nginx runs `worker_processes {workers}` ({worker_count} here) with `worker_connections "
          f"{connections}`" + (f" and `worker_rlimit_nofile {rlimit}`" if rlimit else " (no `worker_rlimit_nofile`)")
          + "; a proxied WebSocket holds two connections in one worker (client + upstream unix socket), so "
          f"nginx tops out near {ceiling} sessions, fewer when connections are spread unevenly over the "
          f"workers. `ulimit -n` = {config.get('ulimit_n', '?')} bounds the app"
          + ("" if rlimit else " and each nginx worker") + ". "
          + (f"nginx's error log has {limit} `worker_connections are not enough`/`Too many open files` lines "
             f"in this run, e.g. `{sessions.get('nginx_limit_sample')}`." if limit else
             "nginx's error log reported no connection-limit errors in this run.")
          + " The nginx configuration was not changed for the benchmark.\n")

    if multi:
        w("## 4. Multi-backend throughput\n")
        first = multi[0]
        w(f"{first['jobs']} `POST /api/generate` jobs, {first['concurrency']} at a time, through nginx; each emulator "
          f"takes ≈{config.get('job_ms', '?')} ms per job (KSampler {config.get('steps', '?')} steps × "
          f"`sampler_step_ms` {config.get('step_ms', '?')}, fresh seed every job, other nodes instant). "
          "`COMFYUI_SERVER` lists 1, 2 or 4 emulators. Idle gap = on one backend, the next job's start "
          "minus the previous job's end, from the emulator's own execution records "
          "(`GET /emulator/executions`), over all backends.\n")
        w("| backends | jobs/s | vs 1 backend | ideal | jobs per backend | job time p50 ms | idle gap p50 ms | idle gap p99 ms | request p50 ms | request p99 ms | failures |")
        w("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        base = first["jobs_per_second"]
        for run in multi:
            per = "/".join(str(b["jobs"]) for b in run["per_backend"])
            job_p50 = percentile([b["job_ms"]["p50"] for b in run["per_backend"] if b["job_ms"]["p50"]], 50)
            w(f"| {run['backends']} | {fmt(run['jobs_per_second'], 2)} | {fmt(run['jobs_per_second'] / base, 2)}× | "
              f"{run['backends']}× | {per} | {fmt(job_p50)} | {fmt(run['gap']['p50'], 2)} | {fmt(run['gap']['p99'], 2)} | "
              f"{fmt(run['latency']['p50'])} | {fmt(run['latency']['p99'])} | {run['failures']} |")
        w("")
    if jobs:
        w("## 5. The job store: `POST /api/jobs`\n")
        w("Each `202 Accepted` means the job is in `STATE_DIR/jobs.sqlite` (one `INSERT` in WAL mode with "
          "`synchronous=NORMAL`, on the store's own thread) before the answer goes out. The emulator is set to "
          "hang, so the jobs stay queued: this measures the accepting side only (nginx → FastCGI → validation, "
          "node policy, the insert, the answer).\n")
        seq, burst = jobs["sequential"], jobs["burst"]
        w("| run | requests | p50 ms | p99 ms | jobs accepted/s | not 202 |")
        w("|---|---:|---:|---:|---:|---:|")
        w(f"| one at a time | {jobs['requests']} | {fmt(seq['p50'], 2)} | {fmt(seq['p99'], 2)} | "
          f"{fmt(1000 / seq['p50'] if seq['p50'] else None, 0)} | {jobs['sequential_non_202']} |")
        w(f"| {burst['concurrency']} at a time | {burst['requests']} | {fmt(burst['latency']['p50'], 2)} | "
          f"{fmt(burst['latency']['p99'], 2)} | {fmt(burst['accepted_per_second'], 0)} | {burst['non_202']} |")
        w("\nWhat durability costs: `synchronous=NORMAL` in WAL mode writes each commit to the WAL without an "
          "`fsync`; the WAL is synced at checkpoints. A crash of the app or of the whole `make run` loses "
          "nothing (the kernel has the pages); a power cut can lose the last commits but never corrupts the "
          "database. `synchronous=FULL` would add one `fsync` per accepted job.\n")
    if keyed["open"] and keyed["keyed"]:
        w("### With API keys\n")
        w(f"`{keyed['open']['command']}` on `GET /api/jobs/{{id}}` (one read of the job store each): first before any key "
          "exists, then, once `FCGIApp keys create` made one, with its Bearer header on a job of that key. The difference "
          "is the key check (a SHA-256 of the secret and a cached lookup; the store is asked once a second).\n")
        w("| keys | req/s | p50 ms | p99 ms | non-2xx |")
        w("|---|---:|---:|---:|---:|")
        for label, run in (("none yet", keyed["open"]), ("Bearer key", keyed["keyed"])):
            w(f"| {label} | {fmt(run['rps'], 0)} | {fmt(run['latency_ms'].get('p50'), 2)} | {fmt(run['latency_ms'].get('p99'), 2)} | {run['non_2xx']} |")
        w("")
    if restart:
        w("## 6. Restart with a full job database\n")
        w(f"`FCGIApp run` started on a database holding {restart['finished']:,} finished and {restart['queued']:,} "
          f"queued jobs ({fmt(restart['database_bytes'] / 1048576)} MiB), written straight into its schema by "
          "`bench.py prefill`. Start = the supervisor is launched; serving = `/healthz` answers 200 through "
          "nginx (bench.sh polls every 50 ms).\n")
        w(f"- Restart to serving: **{fmt(restart['seconds'] * 1000, 0)} ms**; a finished job then answers "
          f"`{restart.get('finished_status')}`, the oldest queued one `{restart.get('queued_status')}`.\n")
    images = load("images")
    if images:
        side = images["image_size"]
        megapixels = side * side / 1e6
        w("## 7. Images: output formats and input URLs\n")
        w(f"`/api/generate` one at a time, {images['requests']} requests per row, the emulator making {side}×{side} "
          "outputs whose pixels are noise (the worst case for every encoder). `png` is ComfyUI's own file, stored as it "
          "comes; `webp` and `jpeg` (quality 90) are decoded with libpng and encoded with libwebp or libjpeg-turbo on "
          "NIO's thread pool. The added time over `png`, per megapixel, is the conversion's cost.\n")
        w("| output_format | p50 ms | p99 ms | stored bytes | added p50 ms per Mpx |")
        w("|---|---:|---:|---:|---:|")
        base = images["formats"]["png"]["latency"].get("p50") or 0
        for kind, run in images["formats"].items():
            added = "" if kind == "png" else fmt((run["latency"].get("p50", 0) - base) / megapixels, 1)
            w(f"| {kind} | {fmt(run['latency'].get('p50'), 2)} | {fmt(run['latency'].get('p99'), 2)} | {run['bytes']:,.0f} | {added} |")
        w("")
        inputs = images["inputs"]
        w(f"Input images: the same img2img job with a {inputs['image_bytes']:,}-byte 512×512 PNG sent as a "
          "multipart part, or as a URL the gateway fetches (a Python HTTP server on loopback, "
          "`INPUT_URL_ALLOW_PRIVATE=true`); the emulator back to 16×16 outputs.\n")
        w("| input | p50 ms | p99 ms |")
        w("|---|---:|---:|")
        for name, label in (("form", "multipart upload"), ("url", "URL")):
            w(f"| {label} | {fmt(inputs[name].get('p50'), 2)} | {fmt(inputs[name].get('p99'), 2)} |")
        w(f"\n- A URL input adds **{fmt((inputs['url'].get('p50', 0) - inputs['form'].get('p50', 0)), 2)} ms** at p50 "
          "(resolve and check the address, fetch, probe) over the same bytes in the request.\n")
    if args.notes and Path(args.notes).exists():
        w(Path(args.notes).read_text().rstrip() + "\n")
    Path(args.output).write_text("\n".join(out))
    print(f"wrote {args.output}", file=sys.stderr)


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="subcommand", required=True)

    p = sub.add_parser("latency")
    p.add_argument("--gateway", required=True)
    p.add_argument("--emulator", required=True)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--app-pid", type=int)
    p.add_argument("--nginx-pid", type=int)
    p.add_argument("--emulator-pid", type=int)
    p.add_argument("--out", required=True)

    p = sub.add_parser("parse")
    p.add_argument("--gateway", required=True)
    p.add_argument("--emulator", required=True)
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--extra-nodes", type=lambda s: [int(x) for x in s.split(",")], default=[0, 50, 200, 800])
    p.add_argument("--out", required=True)

    p = sub.add_parser("wrk")
    p.add_argument("--anchor", required=True)
    p.add_argument("--gateway", required=True)
    p.add_argument("--static-path", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", default="10s")
    p.add_argument("--out", required=True)

    p = sub.add_parser("sketch")
    p.add_argument("--gateway", required=True)
    p.add_argument("--emulator", required=True)
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", required=True)

    p = sub.add_parser("sessions")
    p.add_argument("--gateway", required=True)
    p.add_argument("--app-pid", type=int, required=True)
    p.add_argument("--nginx-pid", type=int)
    p.add_argument("--nginx-error-log")
    p.add_argument("--counts", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000])
    p.add_argument("--direct-socket")
    p.add_argument("--direct-count", type=int, default=0)
    p.add_argument("--hold", type=float, default=3)
    p.add_argument("--out", required=True)

    p = sub.add_parser("multi")
    p.add_argument("--gateway", required=True)
    p.add_argument("--emulator", action="append", required=True)
    p.add_argument("--jobs", type=int, default=128)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", required=True)

    p = sub.add_parser("jobs")
    p.add_argument("--gateway", required=True)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--burst", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", required=True)

    p = sub.add_parser("keyed")
    p.add_argument("--gateway", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--secret")
    p.add_argument("--duration", default="10s")
    p.add_argument("--out", required=True)

    p = sub.add_parser("prefill")
    p.add_argument("--database", required=True)
    p.add_argument("--finished", type=int, default=10000)
    p.add_argument("--queued", type=int, default=1000)
    p.add_argument("--out", required=True)

    p = sub.add_parser("images")
    p.add_argument("--gateway", required=True)
    p.add_argument("--image-server", required=True)
    p.add_argument("--emulator", required=True)
    p.add_argument("--image-dir", required=True)
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", required=True)

    p = sub.add_parser("style")
    p.add_argument("path")

    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--notes")

    args = parser.parse_args()
    if args.subcommand == "style":
        Path(args.path).write_text(json.dumps(sketch_style()))
    elif args.subcommand == "wrk":
        cmd_wrk(args)
    elif args.subcommand == "report":
        cmd_report(args)
    elif args.subcommand == "prefill":
        cmd_prefill(args)
    elif args.subcommand == "keyed":
        cmd_keyed(args)
    else:
        asyncio.run({"latency": cmd_latency, "sketch": cmd_sketch, "sessions": cmd_sessions,
                     "multi": cmd_multi, "parse": cmd_parse, "jobs": cmd_jobs,
                     "images": cmd_images}[args.subcommand](args))


if __name__ == "__main__":
    main()
