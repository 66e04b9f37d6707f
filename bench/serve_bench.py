#!/usr/bin/env python3
"""Predictions per second and latency of `mnist-cnn serve`'s POST /api/predict.

    python3 bench/serve_bench.py MODEL [--binary target/release/mnist-cnn] [--clients 8]
        [--requests 400]

Starts the server on a free port, sends the first test digits of the committed subset (as PGM
pictures, each prepared as `predict` prepares photos) from CLIENTS threads at once, and prints
a table: requests per second over the run, and the median and 95th-percentile latency. Also
one client alone, for the latency of an idle server.
"""
import argparse
import gzip
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ROOT / "data" / "mnist-subset" / "t10k-images-idx3-ubyte.gz"


def digits(n):
    raw = gzip.open(SUBSET).read()[16:]
    return [b"P5 28 28 255\n" + raw[k * 784:(k + 1) * 784] for k in range(n)]


def run(url, bodies, clients, total):
    latencies, lock = [], threading.Lock()

    def worker(index):
        mine = []
        for i in range(index, total, clients):
            body = bodies[i % len(bodies)]
            start = time.perf_counter()
            request = urllib.request.Request(url + "/api/predict", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 200
                response.read()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return (total / elapsed, statistics.median(latencies) * 1e3,
            latencies[int(0.95 * (len(latencies) - 1))] * 1e3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "mnist-cnn"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    server = subprocess.Popen([args.binary, "serve", args.model, "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://")).rstrip("/")
        bodies = digits(100)
        run(url, bodies, 2, 20)  # warm-up
        print("| clients | requests | predictions/s | median ms | p95 ms |")
        print("|---|---|---|---|---|")
        for clients, total in [(1, args.requests // 4), (args.clients, args.requests)]:
            rate, median, p95 = run(url, bodies, clients, total)
            print(f"| {clients} | {total} | {rate:.0f} | {median:.1f} | {p95:.1f} |")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
