"""Latency, concurrency, idle-connection tolerance and memory of the `serve` process.

    python benchmarks/serve_latency.py --model local-run/model [--requests 200] [--core 0,1]

Starts `python -m clinical_ner.runtime.serve` (under `taskset -c <--core>` when given) with
OPENBLAS_NUM_THREADS=1 on a free loopback port, waits for /ping, then measures, client side
(HTTP + validation + inference + JSON):

1. latency at 1 client and at `--clients` (8) concurrent clients, each on its own keep-alive
   connection: `--warmup` then `--requests` POST /invocations, each one note of ~400 words (the
   first 400 words of an MTSamples transcription, normalised as the prep job does; notes
   rotate). Prints p50/p90/p99/max and requests per second.
2. /ping while `--idle-connections` (64) TCP connections are open and silent: answered or not
   within 5 s, and how fast.
3. memory under new words: `--unseen-requests` (10,000) requests, each a short note of random
   never-seen words around a few clinical terms, sent by `--clients` clients; the RSS of the
   server and all its worker processes is printed every `--rss-every` (1,000) requests. A
   server that keeps every string it has seen grows linearly here; a bounded one stays flat.

The notes are read from the shared MTSamples CSV at run time; nothing from it is stored in the
repository. Prints one JSON line at the end (also written to `--output` when given).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "mtsamples" / "mtsamples.csv"
sys.path.insert(0, str(REPO))

from clinical_ner.data.notes import normalise_text  # noqa: E402


def load_notes(path: Path, words: int, count: int) -> list[str]:
    """`count` distinct notes, each the first `words` words of a long enough transcription."""
    csv.field_size_limit(2**31 - 1)
    notes: list[str] = []
    seen: set[str] = set()
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = normalise_text(row.get("transcription") or "", mtsamples_repair=True)
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


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass  # the process ended
    return 0


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (the server and its inference workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_mib(pid: int) -> float:
    """Current RSS of the server process tree."""
    return sum(_status_kib(p, "VmRSS") for p in process_tree(pid)) / 1024


def peak_rss_mib(pid: int) -> float:
    """Sum over the process tree of each process's peak RSS (VmHWM)."""
    return sum(_status_kib(p, "VmHWM") for p in process_tree(pid)) / 1024


def run_clients(
    port: int, bodies: Callable[[int], bytes], total: int, clients: int
) -> tuple[list[float], float, int]:
    """Send `total` requests from `clients` threads (one keep-alive connection each).

    Returns the latencies in ms, the wall time in s and the number of entities returned.
    """
    latencies: list[float] = []
    entities = [0]
    errors: list[str] = []
    counter = iter(range(total))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = next(counter, None)
            if i is None or errors:
                break
            t0 = time.perf_counter()
            status, out = post(conn, bodies(i))
            elapsed = (time.perf_counter() - t0) * 1000
            if status != 200:
                errors.append(f"request {i}: HTTP {status}: {out[:300]!r}")
                break
            with lock:
                latencies.append(elapsed)
                entities[0] += len(json.loads(out)["entities"])
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(errors[0])
    return latencies, time.perf_counter() - started, entities[0]


def latency_summary(latencies: list[float], seconds: float) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p90_ms": round(percentile(latencies, 90), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
        "mean_ms": round(statistics.mean(latencies), 1),
        "requests_per_second": round(len(latencies) / seconds, 2),
    }


def ping_with_idle_connections(port: int, idle: int) -> dict[str, object]:
    """Open `idle` silent TCP connections, then GET /ping with a 5 s client timeout."""
    sockets = []
    try:
        for _ in range(idle):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)  # let the server accept what it will
        t0 = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/ping")
            status = conn.getresponse().status
            conn.close()
        except OSError as exc:
            return {"idle_connections": idle, "ping_ok": False, "ping_error": type(exc).__name__}
        return {
            "idle_connections": idle,
            "ping_ok": status == 200,
            "ping_ms": round((time.perf_counter() - t0) * 1000, 1),
        }
    finally:
        for sock in sockets:
            sock.close()


def unseen_note(i: int, rng: random.Random) -> bytes:
    """A short note of random never-seen words (like names) around a few clinical terms."""
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(6, 12))) for _ in range(30)]
    words[5:5] = ["has", "asthma", "treated", "with", "albuterol", "."]
    return json.dumps({"note_id": f"unseen-{i}", "text": " ".join(words)}).encode()


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
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--idle-connections", type=int, default=64)
    parser.add_argument("--unseen-requests", type=int, default=10_000)
    parser.add_argument("--rss-every", type=int, default=1000)
    parser.add_argument(
        "--core", default=None, help="CPU list for taskset, e.g. 0 or 0,1 (default: not pinned)"
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra serve argument (repeatable)"
    )
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
        "clinical_ner.runtime.serve",
        "--model-dir",
        args.model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args.server_arg,
    ]
    pinned = None
    if args.core is not None:
        if shutil.which("taskset"):
            command = ["taskset", "-c", args.core, *command]
            pinned = args.core
        else:
            print("taskset not found: the server is not pinned", file=sys.stderr)
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    result: dict[str, object] = {"benchmark": "serve_latency", "model": str(args.model)}
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
        result["server_ready_seconds"] = round(time.perf_counter() - started, 1)
        result["server_processes"] = len(process_tree(server.pid))

        bodies = [
            json.dumps({"note_id": f"bench-{i}", "text": note}).encode()
            for i, note in enumerate(notes)
        ]

        def note_body(i: int) -> bytes:
            return bodies[i % len(bodies)]

        run_clients(port, note_body, args.warmup, 1)
        words = [len(n.split()) for n in notes]
        result.update(
            {
                "notes_distinct": len(notes),
                "words_per_note_mean": round(statistics.mean(words), 1),
                "chars_per_note_mean": round(statistics.mean(len(n) for n in notes), 1),
                "pinned_cores": pinned,
            }
        )
        for clients in sorted({1, args.clients}):
            latencies, seconds, entities = run_clients(port, note_body, args.requests, clients)
            summary = latency_summary(latencies, seconds)
            summary["entities_per_note_mean"] = round(entities / len(latencies), 2)
            result[f"clients_{clients}"] = summary
            print(
                f"{clients} client(s), {summary['requests']} requests of "
                f"~{result['words_per_note_mean']:.0f} words: p50 {summary['p50_ms']} ms, "
                f"p99 {summary['p99_ms']} ms, max {summary['max_ms']} ms, "
                f"{summary['requests_per_second']} req/s",
                flush=True,
            )

        idle = ping_with_idle_connections(port, args.idle_connections)
        result["ping_with_idle_connections"] = idle
        print(f"/ping with {args.idle_connections} idle connections open: {idle}", flush=True)

        rng = random.Random(0)
        unseen = [unseen_note(i, rng) for i in range(args.unseen_requests)]
        curve = [{"requests": 0, "rss_mib": round(rss_mib(server.pid), 1)}]
        print(f"RSS before unseen-word requests: {curve[0]['rss_mib']} MiB", flush=True)
        done = 0
        while done < len(unseen):
            step = min(args.rss_every, len(unseen) - done)
            offset = done
            run_clients(port, lambda i, o=offset: unseen[o + i], step, args.clients)
            done += step
            curve.append({"requests": done, "rss_mib": round(rss_mib(server.pid), 1)})
            print(f"RSS after {done} unseen-word requests: {curve[-1]['rss_mib']} MiB", flush=True)
        result["rss_curve_unseen_words"] = curve
        if len(curve) > 2:
            # Growth after the first chunk (allocator warm-up) per 1,000 requests.
            first, last = curve[1], curve[-1]
            per_k = (last["rss_mib"] - first["rss_mib"]) / (
                (last["requests"] - first["requests"]) / 1000
            )
            result["rss_growth_mib_per_1k_requests"] = round(per_k, 2)
        result["server_peak_rss_mib"] = round(peak_rss_mib(server.pid), 1)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    line = json.dumps(result)
    print(line)
    if args.output:
        Path(args.output).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
