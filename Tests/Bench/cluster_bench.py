#!/usr/bin/env python3
"""Several gateway instances on one PostgreSQL (issue 13's measurements), for `make bench`.

Starts a private PostgreSQL (scripts/postgres-cluster.sh), emulator backends that do no work,
and 1, 2 or 3 `FCGIApp run` instances on it; measures
  - jobs/s through 1, 2 and 3 instances (submitted round-robin, until every one is completed),
  - submit latency (POST /api/jobs up to the 202) on PostgreSQL against SQLite,
  - the time from an instance's SIGKILL to its jobs being taken over and completed elsewhere,
and writes the results as JSON (cluster_bench.py run) or as BENCHMARKS.md's section 8
(cluster_bench.py report).
"""
import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(HERE / "Tests" / "Bench"))
from bench import percentile, summary_ms  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workflow(seed: int) -> dict:
    """The cheapest job: an empty image, saved (the emulator makes it at once)."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": seed % 16777216}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
    }


class Cluster:
    def __init__(self, work: Path, binary: str):
        self.work, self.binary = work, binary
        self.processes: list[subprocess.Popen] = []
        self.pg_dir = work / "pg"
        self.pg_port = free_port()
        subprocess.run([str(HERE / "scripts/postgres-cluster.sh"), "start", str(self.pg_dir), str(self.pg_port)], check=True)
        self.emulators = [self.emulator(i) for i in range(4)]

    def psql(self, sql: str, database: str = "gateway") -> str:
        command = ["psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-qAt", "-d", database, "-c", sql]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--"] + command
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()

    def fresh_database(self) -> None:
        self.psql("DROP DATABASE IF EXISTS gateway WITH (FORCE)", database="postgres")
        self.psql("CREATE DATABASE gateway", database="postgres")

    def emulator(self, index: int) -> str:
        folder = self.work / f"emulator-{index}"
        folder.mkdir()
        process = subprocess.Popen(
            [sys.executable, str(HERE / "Tests/Emulator/comfyui_emulator.py"), "--port", "0", "--data-dir", str(folder / "comfy")],
            stdout=subprocess.PIPE, stderr=open(folder / "emulator.log", "w"), text=True,
        )
        self.processes.append(process)
        line = process.stdout.readline()
        assert line.startswith("READY "), line
        return f"http://127.0.0.1:{line.split()[1]}"

    def instance(self, name: str, store: str | None) -> tuple[subprocess.Popen, str]:
        folder = self.work / name
        (folder / "run").mkdir(parents=True)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("TLS_CERT", "TLS_KEY", "STORAGE", "SERVER_BASE_URL")}
        env.update({
            "PORT": str(port), "RUN_DIR": str(folder / "run"), "STATE_DIR": str(folder / "state"), "OUTPUT_DIR": str(self.work / "output"),
            "WORKFLOW_DIR": str(folder / "workflow"), "COMFYUI_SERVER": ",".join(self.emulators), "LOG_LEVEL": "warning",
            "STATIC_DIR": str(HERE / "static"), "NGINX_TEMPLATE_DIR": str(HERE / "nginx"), "BACKEND_CAPACITY": "8",
            "MAX_QUEUED_JOBS": "100000", "FCGI_THREADS": "64", "LEASE_TIMEOUT": "3s",
        })
        (folder / "workflow").mkdir()
        if store:
            env["JOB_STORE"] = store
        process = subprocess.Popen([self.binary, "run"], cwd=folder, env=env, stdout=open(folder / "app.log", "w"), stderr=subprocess.STDOUT)
        self.processes.append(process)
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                import urllib.request
                if urllib.request.urlopen(f"{base}/healthz", timeout=1).status == 200:
                    return process, base
            except Exception:
                time.sleep(0.05)
        raise RuntimeError(f"instance {name} did not start: {(folder / 'app.log').read_text()[-2000:]}")

    def kill_instance(self, name: str, process: subprocess.Popen) -> None:
        """SIGKILL of the whole `make run`: the supervisor first (it would start a new app), then
        the app, nginx and nginx's workers."""
        process.kill()
        process.wait()
        run = self.work / name / "run"
        for file in ("app.pid", "nginx.pid"):
            try:
                pid = int((run / file).read_text().strip())
            except (OSError, ValueError):
                continue
            children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
            for target in [pid] + [int(c) for c in children]:
                try:
                    os.kill(target, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stop(self, process: subprocess.Popen) -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.stop(process)
        subprocess.run([str(HERE / "scripts/postgres-cluster.sh"), "stop", str(self.pg_dir)])


async def submit_all(bases: list[str], count: int, concurrency: int, seed0: int) -> tuple[list[float], list[str]]:
    sem = asyncio.Semaphore(concurrency)
    latencies, ids = [], []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), connector=aiohttp.TCPConnector(limit=0)) as http:
        async def one(index: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                async with http.post(f"{bases[index % len(bases)]}/api/jobs", json={"workflow_data": workflow(seed0 + index), "output_node_id": "2"}) as r:
                    body = await r.json()
                    assert r.status == 202, body
                latencies.append(time.perf_counter() - t0)
                ids.append(body["id"])
        await asyncio.gather(*(one(i) for i in range(count)))
    return latencies, ids


def wait_completed(cluster: Cluster, count: int, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(cluster.psql("SELECT count(*) FROM jobs WHERE status = 'completed'")) >= count:
            return time.perf_counter()
        time.sleep(0.05)
    raise RuntimeError("jobs did not complete")


def run(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="gw-cluster-bench."))
    work.chmod(0o755)  # the PostgreSQL server runs as the user postgres and must reach its folder
    cluster = Cluster(work, args.binary)
    store = f"postgres://postgres@127.0.0.1:{cluster.pg_port}/gateway"
    results: dict = {"jobs": args.jobs, "concurrency": args.concurrency, "backends": len(cluster.emulators), "throughput": []}
    try:
        for n in (1, 2, 3):
            cluster.fresh_database()
            instances = [cluster.instance(f"n{n}-{i}", store) for i in range(n)]
            t0 = time.perf_counter()
            asyncio.run(submit_all([base for _, base in instances], args.jobs, args.concurrency, n * 1_000_000))
            done = wait_completed(cluster, args.jobs)
            results["throughput"].append({"instances": n, "jobs_per_second": args.jobs / (done - t0), "seconds": done - t0})
            for process, _ in instances:
                cluster.stop(process)

        # Submit latency, one at a time, PostgreSQL against SQLite.
        cluster.fresh_database()
        for label, backing in (("postgres", store), ("sqlite", None)):
            process, base = cluster.instance(f"latency-{label}", backing)
            asyncio.run(submit_all([base], 20, 1, 5_000_000))
            latencies, _ = asyncio.run(submit_all([base], args.submits, 1, 6_000_000))
            results[f"submit_{label}"] = summary_ms(latencies)
            cluster.stop(process)

        # An instance dies with jobs queued on it: how long until another took them over and ran them.
        cluster.fresh_database()
        for url in cluster.emulators:
            import urllib.request
            urllib.request.urlopen(urllib.request.Request(f"{url}/emulator/config", data=json.dumps({"node_delay_ms": 200}).encode(), method="POST"))
        (a, a_base), (b, b_base) = cluster.instance("death-a", store), cluster.instance("death-b", store)
        asyncio.run(submit_all([a_base], 400, 32, 7_000_000))
        time.sleep(0.5)
        killed = time.perf_counter()
        cluster.kill_instance("death-a", a)
        while int(cluster.psql("SELECT count(*) FROM jobs WHERE lease_generation > 1")) == 0:
            time.sleep(0.02)
        taken = time.perf_counter()
        left = int(cluster.psql("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"))
        done = wait_completed(cluster, 400)
        results["takeover"] = {
            "lease_timeout_s": 3, "jobs": 400, "node_delay_ms": 200, "unfinished_at_takeover": left,
            "to_first_takeover_s": taken - killed, "to_all_completed_s": done - killed,
        }
        cluster.stop(b)
    finally:
        cluster.close()
    Path(args.out).write_text(json.dumps(results, indent=2))


def report(args) -> None:
    r = json.loads(Path(args.results).read_text())
    rows = "\n".join(f"| {t['instances']} | {t['jobs_per_second']:.0f} | {t['seconds']:.2f} |" for t in r["throughput"])
    pg, lite, takeover = r["submit_postgres"], r["submit_sqlite"], r["takeover"]
    text = f"""
## 8. Several instances on one PostgreSQL

`{args.command}` (Tests/Bench/cluster_bench.py): a private PostgreSQL 15 (fsync off, on this
VM's disk), {r['backends']} emulator backends doing no work (`BACKEND_CAPACITY=8` each), the {args.build} build.
What is measured is the coordination: leases, shared slots, notifications, webhooks off. Every
instance, the database, the emulators and the client share this VM's 2 cores: more instances
here means more processes on the same cores, not more machines.

**Jobs/s through 1, 2 and 3 instances** ({r['jobs']} cheapest jobs submitted round-robin, {r['concurrency']} at a time,
from the first submit until the database says every one is completed):

| instances | jobs/s | seconds |
|---|---|---|
{rows}

**Submit latency**, `POST /api/jobs` up to the 202, one at a time ({pg['n']} requests):

| store | p50 ms | p99 ms |
|---|---|---|
| PostgreSQL | {pg['p50']:.2f} | {pg['p99']:.2f} |
| SQLite | {lite['p50']:.2f} | {lite['p99']:.2f} |

**An instance dies** (SIGKILL of its whole process tree, `LEASE_TIMEOUT=3s`) with
{takeover['jobs']} jobs submitted to it, {takeover['unfinished_at_takeover']} of them unfinished when taken over:
the other instance took its jobs over {takeover['to_first_takeover_s']:.2f} s after the kill, and every one
was completed {takeover['to_all_completed_s']:.2f} s after it. The emulators here do work ({takeover.get('node_delay_ms', 200)} ms per node, two nodes per
job, one prompt at a time per backend): {takeover['jobs']} jobs are {takeover['jobs'] * 2 * takeover.get('node_delay_ms', 200) / 1000 / r['backends']:.0f} s of their time on {r['backends']} backends.
"""
    with open(args.output, "a") as f:
        f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command_name", required=True)
    r = sub.add_parser("run")
    r.add_argument("--binary", required=True)
    r.add_argument("--jobs", type=int, default=1000)
    r.add_argument("--concurrency", type=int, default=32)
    r.add_argument("--submits", type=int, default=300)
    r.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--command", default="make bench")
    p.add_argument("--build", default="release")
    args = parser.parse_args()
    {"run": run, "report": report}[args.command_name](args)


if __name__ == "__main__":
    main()
