"""Latency of the app as a visitor sees it, through gradio_client: time to first token and to the
full answer of `/generate`, over N requests with 1 client and with 4 concurrent clients.

    python benchmarks/app.py                     # starts `python app.py` on a free port
    python benchmarks/app.py --json              # one JSON object (keys below)
    python benchmarks/app.py --url http://127.0.0.1:7860 --method base

Without --url the app runs in a subprocess with the shipped model (STEERING_* variables apply)
and a throw-away database, so the benchmark never writes into data/. One warm-up request loads
the model before timing. With 4 clients the requests queue behind the app's one model
concurrency slot, so their times include the wait: that is what a fourth visitor experiences.

--json prints {"clients_1": {...}, "clients_4": {...}, "requests", "method", "max_new_tokens"},
each clients_* holding ttft_p50_s, ttft_p95_s, total_p50_s and total_p95_s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from gradio_client import Client

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "assets" / "prompts" / "eval.jsonl"
START_TIMEOUT_S = 900


def read_prompts() -> list[str]:
    lines = PROMPTS.read_text(encoding="utf-8").splitlines() if PROMPTS.is_file() else []
    prompts = [json.loads(line)["prompt"] for line in lines if line.strip()]
    return prompts or ["Write a short review of a cafe."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served_app():
    """`python app.py` on a free port with a temporary database; yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        env = {**os.environ, "PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp}/bench.db"}
        log_path = Path(tmp) / "server.log"
        with log_path.open("w") as log:
            server = subprocess.Popen(
                [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if server.poll() is not None:
                    tail = log_path.read_text()[-2000:]
                    raise SystemExit(f"the app exited with status {server.returncode}:\n{tail}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(
                            f"the app did not start within {START_TIMEOUT_S} s"
                        ) from None
                    time.sleep(0.5)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def one_request(client: Client, prompt: str, args) -> tuple[float, float]:
    """(seconds to the first streamed text, seconds to the stored answer) for one /generate."""
    k = args.objectives
    start = time.perf_counter()
    job = client.submit(
        prompt=prompt,
        weights=[1.0 / k] * k,
        method=args.method,
        max_new_tokens=args.max_new_tokens,
        seed=0,
        api_name="/generate",
    )
    first = None
    for chunk in job:
        if first is None and chunk.get("text"):
            first = time.perf_counter() - start
    job.result()
    total = time.perf_counter() - start
    return (first if first is not None else total), total


def run_clients(url: str, clients: int, requests: int, prompts: list[str], args) -> dict:
    """`requests` requests shared out over `clients` concurrent clients, each its own session."""
    timings: list[tuple[float, float]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(index: int) -> None:
        client = Client(url, verbose=False)
        for n in range(index, requests, clients):
            try:
                result = one_request(client, prompts[n % len(prompts)], args)
            except BaseException as error:  # noqa: BLE001 (reported after the run)
                errors.append(error)
                return
            with lock:
                timings.append(result)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} request(s) failed; the first: {errors[0]}")
    ttft = np.array([t for t, _ in timings])
    total = np.array([t for _, t in timings])
    return {
        "ttft_p50_s": round(float(np.percentile(ttft, 50)), 4),
        "ttft_p95_s": round(float(np.percentile(ttft, 95)), 4),
        "total_p50_s": round(float(np.percentile(total, 50)), 4),
        "total_p95_s": round(float(np.percentile(total, 95)), 4),
    }


def benchmark(url: str, args) -> dict:
    prompts = read_prompts()
    client = Client(url, verbose=False)
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    if "/frontier" in info:
        args.objectives = len(client.predict(prompt=prompts[0], api_name="/frontier")["objectives"])
    # warm-up: waits for the model to load and the scorers to initialise
    one_request(client, prompts[0], args)
    return {
        "clients_1": run_clients(url, 1, args.requests, prompts, args),
        "clients_4": run_clients(url, 4, args.requests, prompts, args),
        "requests": args.requests,
        "method": args.method,
        "max_new_tokens": args.max_new_tokens,
    }


def format_result(result: dict) -> str:
    lines = [
        f"/generate, {result['requests']} requests, method {result['method']}, "
        f"{result['max_new_tokens']} new tokens",
        "clients  ttft p50  ttft p95  total p50  total p95  (seconds)",
    ]
    for clients in (1, 4):
        r = result[f"clients_{clients}"]
        lines.append(
            f"{clients:>7}  {r['ttft_p50_s']:>8.3f}  {r['ttft_p95_s']:>8.3f}  "
            f"{r['total_p50_s']:>9.3f}  {r['total_p95_s']:>9.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running app; default: start one")
    parser.add_argument("--requests", type=int, default=20, help="requests per client setting")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--method", default="clp")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    args.objectives = 3
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.url:
        result = benchmark(args.url, args)
    else:
        with served_app() as url:
            result = benchmark(url, args)
    print(json.dumps(result) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
