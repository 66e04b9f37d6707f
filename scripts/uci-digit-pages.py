#!/usr/bin/env python3
"""Make pages of real handwritten digits that are not MNIST, to test `mnist-cnn predict`.

Source: the UCI "Optical Recognition of Handwritten Digits" test set (43 writers, 8x8 grey
counts 0..16), which scikit-learn ships inside its wheel as digits.csv.gz. Each digit is
enlarged with bilinear interpolation (8 to 22 px per cell) and drawn as dark ink on a light
page of random size, with the digit off centre, light falling off across the page, and
sensor-like noise: the way a person would photograph a digit on paper. Deterministic.

    pip download --no-deps scikit-learn -d /tmp/skl
    unzip -o /tmp/skl/scikit_learn-*.whl 'sklearn/datasets/data/digits.csv.gz' -d /tmp/skl
    python3 scripts/uci-digit-pages.py /tmp/skl/sklearn/datasets/data/digits.csv.gz /tmp/uci 300
    mnist-cnn predict model.bin /tmp/uci/*.pgm --json > uci.json

File names are NNN_LABEL.pgm, so the accuracy can be read off the JSON.
"""
import gzip
import os
import random
import sys


def bilinear(img, s):
    n = 8 * s
    out = [[0.0] * n for _ in range(n)]
    for y in range(n):
        fy = (y + 0.5) / s - 0.5
        y0 = max(0, min(7, int(fy // 1)))
        y1 = min(7, y0 + 1)
        wy = min(1, max(0, fy - y0))
        for x in range(n):
            fx = (x + 0.5) / s - 0.5
            x0 = max(0, min(7, int(fx // 1)))
            x1 = min(7, x0 + 1)
            wx = min(1, max(0, fx - x0))
            v = (img[y0 * 8 + x0] * (1 - wx) * (1 - wy) + img[y0 * 8 + x1] * wx * (1 - wy)
                 + img[y1 * 8 + x0] * (1 - wx) * wy + img[y1 * 8 + x1] * wx * wy)
            out[y][x] = v / 16
    return out


def main():
    source, dest, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    random.seed(5)
    os.makedirs(dest, exist_ok=True)
    rows = [list(map(int, line.split(","))) for line in gzip.open(source, "rt")]
    for k, row in enumerate(rows[:count]):
        img, label = row[:64], row[64]
        s = random.randint(8, 22)
        up = bilinear(img, s)
        n = 8 * s
        w, h = n + random.randint(40, 200), n + random.randint(40, 160)
        ox, oy = random.randint(0, w - n), random.randint(0, h - n)
        paper, slope = random.randint(200, 245), random.uniform(-60, 0)
        page = bytearray(w * h)
        for y in range(h):
            for x in range(w):
                light = paper + slope * x / w
                page[y * w + x] = int(max(0, min(255, light + random.randint(-4, 4))))
        for y in range(n):
            for x in range(n):
                v = up[y][x]
                if v > 0:
                    i = (oy + y) * w + ox + x
                    page[i] = int(page[i] * (1 - 0.85 * min(1, v * 1.3)))
        with open(os.path.join(dest, f"{k:03d}_{label}.pgm"), "wb") as f:
            f.write(b"P5 %d %d 255\n" % (w, h) + bytes(page))


if __name__ == "__main__":
    main()
