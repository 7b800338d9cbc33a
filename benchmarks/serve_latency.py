"""Latency and peak memory of the `serve` process, pinned to one core, on ~400-word notes.

    python benchmarks/serve_latency.py --model local-run/model [--requests 200]

Starts `python -m clinical_ner.serve` under `taskset -c 0` with OPENBLAS_NUM_THREADS=1 on a free
loopback port, waits for /ping, sends `--warmup` then `--requests` sequential POST
/invocations, each one note of ~400 words (the first 400 words of an MTSamples transcription,
normalised as the prep job does; notes rotate so no two consecutive requests are equal), and
prints p50/p90/p99/max latency (client side: HTTP + validation + inference + JSON) and the
server's peak RSS (VmHWM from /proc). The notes are read from the shared MTSamples CSV at run
time; nothing from it is stored in the repository. Prints one JSON line at the end (also
written to `--output` when given).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "mtsamples" / "mtsamples.csv"
sys.path.insert(0, str(REPO))

from clinical_ner.notes import normalise_text  # noqa: E402


def load_notes(path: Path, words: int, count: int) -> list[str]:
    """`count` distinct notes, each the first `words` words of a long enough transcription."""
    csv.field_size_limit(2**31 - 1)
    notes: list[str] = []
    seen: set[str] = set()
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = normalise_text(row.get("transcription") or "")
            tokens = text.split(" ")
            if len(text.split()) < words:
                continue
            # Cut after the `words`-th whitespace-separated word, keeping the original spacing.
            kept, seen_words = [], 0
            for piece in tokens:
                kept.append(piece)
                seen_words += len(piece.split())
                if seen_words >= words:
                    break
            note = " ".join(kept)
            if note not in seen:
                seen.add(note)
                notes.append(note)
            if len(notes) >= count:
                break
    if not notes:
        raise SystemExit(f"no transcription of >= {words} words in {path}")
    return notes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="trained model directory")
    parser.add_argument("--notes-csv", default=str(DEFAULT_CSV))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--words", type=int, default=400)
    parser.add_argument("--distinct-notes", type=int, default=50)
    parser.add_argument("--core", default="0", help="CPU list for taskset (default: 0)")
    parser.add_argument("--output", default=None, help="also write the JSON result here")
    args = parser.parse_args()

    notes = load_notes(Path(args.notes_csv), args.words, args.distinct_notes)
    port = free_port()
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    command = [
        sys.executable,
        "-m",
        "clinical_ner.serve",
        "--model-dir",
        args.model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if shutil.which("taskset"):
        command = ["taskset", "-c", args.core, *command]
    else:
        print("taskset not found: the server is not pinned", file=sys.stderr)
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = time.perf_counter()
        deadline = started + 180
        while True:
            if server.poll() is not None:
                raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
                conn.close()
            except OSError:
                pass
            if time.perf_counter() > deadline:
                raise SystemExit("server did not become ready in 180 s")
            time.sleep(0.1)
        ready_seconds = time.perf_counter() - started

        bodies = [
            json.dumps({"note_id": f"bench-{i}", "text": note}).encode()
            for i, note in enumerate(notes)
        ]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies: list[float] = []
        entities = 0
        for i in range(args.warmup + args.requests):
            body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            status, out = post(conn, body)
            elapsed = time.perf_counter() - t0
            if status != 200:
                raise SystemExit(f"request {i}: HTTP {status}: {out[:300]!r}")
            if i >= args.warmup:
                latencies.append(elapsed * 1000)
                entities += len(json.loads(out)["entities"])
        conn.close()
        rss = peak_rss_mib(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()

    words = [len(n.split()) for n in notes]
    result = {
        "benchmark": "serve_latency",
        "model": str(args.model),
        "requests": len(latencies),
        "notes_distinct": len(notes),
        "words_per_note_mean": round(statistics.mean(words), 1),
        "chars_per_note_mean": round(statistics.mean(len(n) for n in notes), 1),
        "pinned_core": args.core if shutil.which("taskset") else None,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p90_ms": round(percentile(latencies, 90), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
        "mean_ms": round(statistics.mean(latencies), 1),
        "entities_per_note_mean": round(entities / len(latencies), 2),
        "server_peak_rss_mib": round(rss, 1),
        "server_ready_seconds": round(ready_seconds, 1),
    }
    print(
        f"{result['requests']} requests, ~{result['words_per_note_mean']:.0f} words/note, "
        f"core {result['pinned_core']}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
        f"max {result['max_ms']} ms; server peak RSS {result['server_peak_rss_mib']} MiB"
    )
    line = json.dumps(result)
    print(line)
    if args.output:
        Path(args.output).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
