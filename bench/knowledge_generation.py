"""Benchmark: knowledge generation for 200 diagnoses against a loopback server.

Each request takes a fixed 200 ms. The ideal wall time is N x latency / concurrency; the
script prints the measured wall time over that limit, at concurrency 1 and 16, and checks
that a rerun sends zero requests. The first request of a run goes alone (it settles the
server's output mode), which adds about one latency at concurrency 16. The server runs in
its own process, as a real one would, so its work does not compete with the client for the
interpreter lock.

    python bench/knowledge_generation.py [--labels 200] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kb_store.store import KnowledgeBase
from knowledge.generate import GenerationSummary, generate_knowledge
from knowledge.llm import KnowledgeClient, LLMSettings


async def _generate(
    db: Path, base_url: str, labels: list[str], concurrency: int
) -> GenerationSummary:
    settings = LLMSettings(model="bench", base_url=base_url, concurrency=concurrency)
    client = KnowledgeClient(settings, api_key=None)
    try:
        with KnowledgeBase(db) as kb:
            return await generate_knowledge(kb, client, labels)
    finally:
        await client.aclose()


def server_requests(base_url: str) -> int:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats") as response:
        return int(json.load(response)["requests"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    labels = [f"benchmark diagnosis {i:03d}" for i in range(args.labels)]
    print(f"{args.labels} diagnoses, {args.latency * 1000:.0f} ms per request")
    print(f"{'concurrency':>11}  {'wall s':>7}  {'limit s':>7}  {'wall/limit':>10}  requests")
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.openai_server", "--latency", str(args.latency)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    base_url = server.stdout.readline().strip()
    with tempfile.TemporaryDirectory() as tmp:
        for concurrency in (1, 16):
            db = Path(tmp) / f"c{concurrency}.duckdb"
            started = time.perf_counter()
            summary = asyncio.run(_generate(db, base_url, labels, concurrency))
            wall = time.perf_counter() - started
            limit = args.labels * args.latency / concurrency
            assert summary.ok and len(summary.generated) == args.labels
            print(
                f"{concurrency:>11}  {wall:7.2f}  {limit:7.2f}  {wall / limit:10.3f}  "
                f"{summary.requests}"
            )
        before = server_requests(base_url)
        started = time.perf_counter()
        rerun = asyncio.run(_generate(db, base_url, labels, 16))
        wall = time.perf_counter() - started
        sent = server_requests(base_url) - before
        print(f"rerun: {sent} requests, {len(rerun.skipped)} skipped, {wall:.2f} s")
    server.terminate()


if __name__ == "__main__":
    main()
