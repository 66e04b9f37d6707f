"""Shared by the peer benchmarks: MNIST from the four IDX files, timing, and the table row.

Each peer script trains the same network (Keras's mnist_cnn.py: conv 32 3x3, conv 64 3x3,
max-pool 2x2, dropout 0.35, dense 128, dropout 0.5, dense 10; Adadelta lr 1.0, rho 0.95,
eps 1e-7; batch 128) and prints one JSON line with the figures mnist-cnn's
`cargo bench --bench train_step` prints, measured the same way: median ms of BENCH_STEPS
training steps after 3 warm-up steps, median images/s of 3 passes over the test set in
batches of 500, peak RSS of the process.
"""

import gzip
import json
import os
import resource
import statistics
import struct
import sys

import numpy as np

BATCH = 128
EVAL_BATCH = 500
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def data_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get("MNIST_DATA_DIR", os.path.join(here, "..", "data", "mnist-subset"))


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, count = struct.unpack(">II", data[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, np.uint8, count * rows * cols, 16).reshape(count, rows, cols)
    return np.frombuffer(data, np.uint8, count, 8)


def load():
    d = data_dir()
    x = {k: read_idx(os.path.join(d, v)) for k, v in FILES.items()}
    scale = lambda a: (a.astype(np.float32) / 255.0)[:, None, :, :]  # N, 1, 28, 28
    return (scale(x["train_images"]), x["train_labels"].astype(np.int64),
            scale(x["test_images"]), x["test_labels"].astype(np.int64))


def steps():
    return int(os.environ.get("BENCH_STEPS", "20"))


def time_steps(step, x, y, timer):
    """Median milliseconds of `step(xb, yb)` over BENCH_STEPS batches after 3 warm-up ones."""
    times = []
    for i in range(steps() + 3):
        start = (i * BATCH) % (len(x) - BATCH)
        xb, yb = x[start:start + BATCH], y[start:start + BATCH]
        t = timer()
        step(xb, yb)
        if i >= 3:
            times.append((timer() - t) * 1e3)
    return statistics.median(times)


def time_eval(evaluate, x, timer):
    rates = []
    for _ in range(3):
        t = timer()
        evaluate(x)
        rates.append(len(x) / (timer() - t))
    return statistics.median(rates)


def report(system, ms, rate):
    """One JSON line; `ms` is None for a system that only evaluates."""
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    epoch = None if ms is None else round(ms / 1e3 * -(-60000 // BATCH) + 10000.0 / rate, 1)
    print(json.dumps({
        "system": system,
        "ms_per_step": None if ms is None else round(ms, 1),
        "seconds_per_epoch": epoch,
        "eval_images_per_s": round(rate),
        "peak_rss_mib": round(peak_mib),
    }))
    sys.stdout.flush()
