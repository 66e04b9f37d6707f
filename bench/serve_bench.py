#!/usr/bin/env python3
"""Predictions per second and latency of `mnist-cnn serve`'s POST /api/predict.

    python3 bench/serve_bench.py MODEL [--binary target/release/mnist-cnn] [--clients 8]
        [--requests 400]
    python3 bench/serve_bench.py MODEL --hostile 8 [--seconds 10] [--bomb declared|icc]

Starts the server on a free port, sends the first test digits of the committed subset (as PGM
pictures, each prepared as `predict` prepares photos) from CLIENTS threads at once, and prints
a table: requests per second over the run, and the median and 95th-percentile latency. Also
one client alone, for the latency of an idle server.

`--hostile N`: N clients post, over and over, a 390 KB PNG whose header declares 20000x20000
grey pixels (what a decoder without limits allocates 400 MB for), while one client posts normal
digits; prints the normal client's median and 95th-percentile latency, what the hostile
clients were answered, and the server's peak RSS (Linux: VmHWM).

`--bomb icc`: the hostile clients post instead a 28x28 PNG of about 1 MB whose iCCP chunk (an
ICC colour profile, which PNG decoders inflate) inflates to 1 GB of zeros.
"""
import argparse
import gzip
import statistics
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
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


def png_declaring(width, height):
    """A PNG of `width` x `height` 8-bit grey zeros: a few hundred KB that decode to w*h bytes."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = zlib.compressobj(9)
    raw = b""
    row = b"\0" * (width + 1)
    for _ in range(height):
        raw += rows.compress(row)
    raw += rows.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def png_with_icc_bomb(inflated=1 << 30):
    """A 28x28 grey PNG of a stroke whose iCCP chunk inflates to `inflated` bytes."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    profile = zlib.compressobj(9)
    block = b"\0" * (1 << 20)
    packed = b"".join(profile.compress(block) for _ in range(inflated >> 20)) + profile.flush()
    rows = b"".join(b"\0" + bytes(255 if 12 <= x < 16 else 0 for x in range(28)) for _ in range(28))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
            + chunk(b"iCCP", b"bomb\0\0" + packed) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


def peak_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hostile(url, bodies, attackers, seconds, bomb):
    """The normal client's latencies (ms), sorted, and what the attackers were answered."""
    answers, lock, stop = Counter(), threading.Lock(), threading.Event()

    def attacker():
        while not stop.is_set():
            request = urllib.request.Request(url + "/api/predict", data=bomb, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    status = response.status
                    response.read()
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError:
                status = "error"
            with lock:
                answers[status] += 1

    threads = [threading.Thread(target=attacker) for _ in range(attackers)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    latencies, end, i = [], time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        start = time.perf_counter()
        request = urllib.request.Request(url + "/api/predict", data=bodies[i % len(bodies)],
                                         method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200
            response.read()
        latencies.append((time.perf_counter() - start) * 1e3)
        i += 1
    stop.set()
    for t in threads:
        t.join()
    return sorted(latencies), answers


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "mnist-cnn"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--hostile", type=int, default=0, metavar="N")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--bomb", choices=["declared", "icc"], default="declared")
    args = parser.parse_args()
    server = subprocess.Popen([args.binary, "serve", args.model, "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://")).rstrip("/")
        bodies = digits(100)
        run(url, bodies, 2, 20)  # warm-up
        if args.hostile:
            bomb = png_with_icc_bomb() if args.bomb == "icc" else png_declaring(20000, 20000)
            latencies, answers = hostile(url, bodies, args.hostile, args.seconds, bomb)
            p95 = latencies[int(0.95 * (len(latencies) - 1))]
            print(f"| bomb | hostile clients | normal requests | median ms | p95 ms | max ms "
                  f"| hostile answers | peak RSS MiB |")
            print("|---|---|---|---|---|---|---|---|")
            said = ", ".join(f"{k}: {v}" for k, v in sorted(answers.items(), key=str))
            print(f"| {args.bomb} ({len(bomb) >> 10} KB) | {args.hostile} | {len(latencies)} "
                  f"| {statistics.median(latencies):.1f} | {p95:.1f} | {latencies[-1]:.1f} "
                  f"| {said} | {peak_rss_mib(server.pid):.0f} |")
            return
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
