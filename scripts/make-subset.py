#!/usr/bin/env python3
"""Make the small real MNIST subset committed under data/mnist-subset/ for offline tests.

Takes the first TRAIN training and TEST test images (with their labels) from a directory
holding the four full MNIST .gz files, and writes them in the same gzipped IDX layout and
file names. Deterministic: gzip timestamps are zeroed, so re-running gives identical files.

    python3 scripts/make-subset.py ~/mnist data/mnist-subset --train 3000 --test 1000
"""
import argparse
import gzip
import hashlib
import os
import struct


def read_idx(path):
    with gzip.open(path, "rb") as f:
        return f.read()


def subset(raw, count):
    magic = struct.unpack(">I", raw[:4])[0]
    if magic == 2051:
        n, rows, cols = struct.unpack(">III", raw[4:16])
        assert count <= n and (rows, cols) == (28, 28)
        return struct.pack(">IIII", magic, count, rows, cols) + raw[16:16 + count * rows * cols]
    if magic == 2049:
        n = struct.unpack(">I", raw[4:8])[0]
        assert count <= n
        return struct.pack(">II", magic, count) + raw[8:8 + count]
    raise SystemExit(f"unexpected IDX magic {magic}")


def write_gz(path, data):
    with open(path, "wb") as out:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
            gz.write(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("dest")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()
    os.makedirs(args.dest, exist_ok=True)
    sums = []
    for name, count in [
        ("train-images-idx3-ubyte", args.train),
        ("train-labels-idx1-ubyte", args.train),
        ("t10k-images-idx3-ubyte", args.test),
        ("t10k-labels-idx1-ubyte", args.test),
    ]:
        data = subset(read_idx(os.path.join(args.source, name + ".gz")), count)
        write_gz(os.path.join(args.dest, name + ".gz"), data)
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    with open(os.path.join(args.dest, "SHA256SUMS"), "w") as f:
        f.writelines(sums)


if __name__ == "__main__":
    main()
