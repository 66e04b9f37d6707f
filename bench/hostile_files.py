#!/usr/bin/env python3
"""What hostile model files, checkpoints and requests cost `mnist-cnn`, class by class.

    cargo build --release --example peak_rss
    python3 bench/hostile_files.py [--binary target/release/mnist-cnn]

Trains a tiny model on the committed subset (one epoch of 60 images) for its model file and
checkpoint, crafts from them the files an attacker would hand over (checkpoints that declare
impossible runs, headers that declare millions of entries, poisoned names, relabelled dtypes,
overlapping ranges, NaN weights, a FIFO, /dev/zero, a sparse file), runs the binary on each,
and prints a table: exit code, the first line of stderr, the peak RSS (the command's own VmHWM,
through `examples/peak_rss.rs`: started from this script, whose corpora take gigabytes, the
command would inherit that high-water mark) and the wall time. Then three requests against `serve`: a `Content-Length` of
10^12 with a tiny body, and what the page's API says of the model's file. Nothing here is
timed against a bound: it is a report.
"""
import argparse
import json
import os
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ROOT / "data" / "mnist-subset"


# --- CBOR: the subset burnpack uses (definite lengths, text keys) -----------------------------

def cbor_head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for ai, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([major << 5 | ai]) + n.to_bytes(width, "big")
    raise ValueError(n)


def cbor(value):
    if isinstance(value, bool):
        return bytes([0xF5 if value else 0xF4])
    if isinstance(value, int):
        return cbor_head(0, value) if value >= 0 else cbor_head(1, -1 - value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        return cbor_head(3, len(raw)) + raw
    if isinstance(value, (list, tuple)):
        return cbor_head(4, len(value)) + b"".join(cbor(v) for v in value)
    if isinstance(value, dict):
        return cbor_head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())
    if isinstance(value, Pairs):
        return cbor_head(5, len(value.pairs)) + b"".join(cbor(k) + cbor(v) for k, v in value.pairs)
    raise TypeError(value)


class Pairs:
    """A CBOR map written as the given pairs, repeated keys and all."""
    def __init__(self, pairs):
        self.pairs = pairs


def uncbor(raw, pos=0):
    first = raw[pos]
    major, ai = first >> 5, first & 31
    pos += 1
    if major == 7:
        width = {25: 2, 26: 4, 27: 8}.get(ai)
        if width is None:
            return {20: False, 21: True, 22: None}[ai], pos
        fmt = {2: ">e", 4: ">f", 8: ">d"}[width]
        return struct.unpack(fmt, raw[pos:pos + width])[0], pos + width
    if ai < 24:
        n = ai
    else:
        width = 1 << (ai - 24)
        n = int.from_bytes(raw[pos:pos + width], "big")
        pos += width
    if major == 0:
        return n, pos
    if major == 1:
        return -1 - n, pos
    if major == 3:
        return raw[pos:pos + n].decode(), pos + n
    if major == 4:
        items = []
        for _ in range(n):
            item, pos = uncbor(raw, pos)
            items.append(item)
        return items, pos
    if major == 5:
        out = {}
        for _ in range(n):
            key, pos = uncbor(raw, pos)
            out[key], pos = uncbor(raw, pos)
        return out, pos
    raise ValueError(f"major type {major}")


def read_pack(raw):
    """A burnpack's metadata (as a dict) and each tensor's bytes."""
    size = struct.unpack("<I", raw[6:10])[0]
    meta, _ = uncbor(raw[10:10 + size])
    start = -(-(10 + size) // 256) * 256
    data = {name: raw[start + d["data_offsets"][0]:start + d["data_offsets"][1]]
            for name, d in meta["tensors"].items()}
    return meta, data


def write_pack(meta, data=None, tail=b""):
    """A burnpack of `meta`; with `data`, the tensors laid out anew, each on 256 bytes."""
    if data is not None:
        body = b""
        for name, d in meta["tensors"].items():
            body += b"\0" * (-len(body) % 256)
            d["data_offsets"] = [len(body), len(body) + len(data[name])]
            body += data[name]
        tail = body
    encoded = cbor(meta)
    out = b"NRUB" + struct.pack("<HI", 1, len(encoded)) + encoded
    return out + b"\0" * (-len(out) % 256) + tail


def safetensors(header, data=b""):
    raw = header.encode()
    return struct.pack("<Q", len(raw)) + raw + data


def png_chunk(kind, data):
    import zlib
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


# --- running -----------------------------------------------------------------------------------

PEAK_RSS = ROOT / "target" / "release" / "examples" / "peak_rss"


TIMEOUT = 60.0


def measured(args):
    """Exit code, first stderr line, stderr's line count, peak RSS MiB and seconds."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as report:
        child = subprocess.Popen([str(PEAK_RSS), report.name] + args, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            code = child.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, 9)
            code = child.wait()
        seconds = time.perf_counter() - start
        err.seek(0)
        lines = err.read().decode(errors="replace").splitlines()
        kib = report.read().decode().strip()
    first = lines[0] if lines else ""
    return code, first, len(lines), int(kib) / 1024 if kib else float("nan"), seconds


def shown(text, width=240):
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def main():
    global PEAK_RSS, TIMEOUT
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "mnist-cnn"))
    parser.add_argument("--peak-rss", default=str(PEAK_RSS),
                        help="the peak_rss example, built")
    parser.add_argument("--timeout", type=float, default=TIMEOUT,
                        help="seconds before a command is killed (its exit is then -9)")
    args = parser.parse_args()
    PEAK_RSS = Path(args.peak_rss)
    TIMEOUT = args.timeout
    binary = args.binary
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    model = work / "model.bin"
    subprocess.run([binary, "train", "--epochs", "1", "--limit-train", "60", "--limit-test", "10",
                    "--verbose", "0", "--data-dir", str(SUBSET), "--out", str(model)],
                   check=True, stdout=subprocess.DEVNULL)
    ckpt_raw = (work / "model.bin.ckpt").read_bytes()
    model_raw = model.read_bytes()
    data_dir = ["--data-dir", str(SUBSET), "--limit-test", "10"]
    digit = work / "digit.pgm"
    import gzip
    pixels = gzip.open(SUBSET / "t10k-images-idx3-ubyte.gz").read()[16:16 + 784]
    digit.write_bytes(b"P5 28 28 255\n" + pixels)

    def put(name, raw):
        path = work / name
        path.write_bytes(raw)
        return str(path)

    rows = []

    def row(what, argv):
        code, first, lines, peak, seconds = measured(argv)
        rows.append((what, code, first, lines, peak, seconds))

    def resume(path):
        return [binary, "train", "--resume", path, "--verbose", "0", "--data-dir", str(SUBSET),
                "--limit-train", "60", "--limit-test", "10"]

    # Checkpoints that declare impossible runs.
    for what, key, value in [("checkpoint `batch` 0", "batch", 0),
                             ("checkpoint learning rate -1e30", "lr", -1e30),
                             ("checkpoint `epochs` 2^32-1", "epochs", 2**32 - 1)]:
        meta, data = read_pack(ckpt_raw)
        meta["scalars"]["epochs"] = {"UInt": 2}  # one epoch left to run
        meta["scalars"][key] = {"Float": value} if key == "lr" else {"UInt": value}
        row(f"{what}, `train --resume`", resume(put(f"{key}.ckpt", write_pack(meta, data))))

    # Declarations that cost what they declare, not what the file is.
    dims = ",".join(["1"] * 49_000_000)
    row("safetensors: a 49-million-element shape array (99 MB header)",
        [binary, "eval", put("shape.safetensors", safetensors(
            '{"conv1.weight":{"dtype":"F32","shape":[' + dims + '],"data_offsets":[0,4]}}',
            b"\0" * 4))] + data_dir)
    del dims
    keys = ",".join(f'"{i}":""' for i in range(7_400_000))
    row("safetensors: `__metadata__` with 7.4 M keys",
        [binary, "eval", put("keys.safetensors", safetensors('{"__metadata__":{' + keys + '}}'))]
        + data_dir)
    del keys
    meta, data = read_pack(model_raw)
    meta["metadata"] = Pairs([(str(i), "") for i in range(10_500_000)])
    row("own format: metadata map of 10.5 M entries",
        [binary, "eval", put("map.bin", write_pack(meta, data))] + data_dir)
    meta, data = read_pack(model_raw)
    meta["metadata"] = {str(i): "" for i in range(100)}
    row("own format: metadata map of 100 entries (under the size limit)",
        [binary, "eval", put("entries.bin", write_pack(meta, data))] + data_dir)
    row("/dev/zero as the model", [binary, "eval", "/dev/zero"] + data_dir)
    sparse = work / "sparse.bin"
    with open(sparse, "wb") as f:
        f.truncate(300 << 20)
    row("a 300 MB sparse file as the model", [binary, "eval", str(sparse)] + data_dir)

    # What is not a regular file.
    fifo = work / "fifo.bin"
    os.mkfifo(fifo)
    for command in (["eval", str(fifo)], ["predict", str(fifo), str(digit)],
                    ["export", str(fifo), str(work / "fifo.onnx")],
                    ["serve", str(fifo), "--port", "0"]):
        row(f"a FIFO as the model, `{command[0]}`", [binary] + command)

    # Names that are terminal escape sequences.
    meta, data = read_pack(model_raw)
    poison = "conv1.bias\x1b[2J\x1b]0;owned\x07"
    meta["tensors"] = {(poison if k == "conv1.bias" else k): v for k, v in meta["tensors"].items()}
    data[poison] = data.pop("conv1.bias")
    row("tensor name holding `ESC [2J` and a title sequence",
        [binary, "eval", put("names.bin", write_pack(meta, data))] + data_dir)

    # Our own format, relabelled.
    def relabelled(name, change):
        meta, data = read_pack(model_raw)
        change(meta["tensors"])
        path = put(name, write_pack(meta, data))
        if name == "overlap.bin":  # the layout was rewritten: overlap after the fact
            meta, _ = read_pack(Path(path).read_bytes())
            d1 = meta["tensors"]["dense1.weight"]["data_offsets"][0]
            meta["tensors"]["dense2.weight"]["data_offsets"] = [d1, d1 + 5120]
            raw = Path(path).read_bytes()
            size = struct.unpack("<I", raw[6:10])[0]
            start = -(-(10 + size) // 256) * 256
            path = put(name, write_pack(meta, tail=raw[start:]))
        return path

    def transposed(t):
        t["dense1.weight"]["shape"] = [128, 9216]

    def as_i32(t):
        t["dense1.weight"]["dtype"] = "I32"

    def as_f64(t):
        t["conv2.bias"]["dtype"] = "F64"
        t["conv2.bias"]["shape"] = [32]

    for what, name, change in [("own format: `dense1.weight` declared [128, 9216]", "t.bin", transposed),
                               ("own format: dtype relabelled I32", "i32.bin", as_i32),
                               ("own format: dtype relabelled F64", "f64.bin", as_f64),
                               ("own format: overlapping ranges", "overlap.bin", lambda t: None)]:
        row(what, [binary, "eval", relabelled(name, change)] + data_dir)

    # Weights that are not numbers.
    meta, data = read_pack(model_raw)
    weights = bytearray(data["dense1.weight"])
    weights[20:24] = struct.pack("<f", float("nan"))
    weights[40:44] = struct.pack("<f", float("inf"))
    data["dense1.weight"] = bytes(weights)
    nan = put("nan.bin", write_pack(meta, data))
    for command in (["eval", nan] + data_dir, ["predict", nan, str(digit)],
                    ["export", nan, str(work / "nan.onnx")]):
        row(f"NaN and Inf in `dense1.weight`, `{command[0]}`", [binary] + command)

    # safetensors with a name twice.
    subprocess.run([binary, "export", str(model), str(work / "m.safetensors")], check=True,
                   stdout=subprocess.DEVNULL)
    raw = (work / "m.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = raw[8:8 + n].decode()
    entries = json.loads(header)
    first = next(k for k in entries if k != "__metadata__")
    twice = header.rstrip()[:-1] + f',"{first}":' + json.dumps(entries[first]) + "}"
    row("safetensors with a tensor name given twice",
        [binary, "eval", put("twice.safetensors", safetensors(twice, raw[8 + n:]))] + data_dir)

    print("| file | exit | stderr lines | first line | peak RSS MiB | seconds |")
    print("|---|---|---|---|---|---|")
    for what, code, first, lines, peak, seconds in rows:
        print(f"| {what} | {code} | {lines} | {shown(first)} | {peak:.1f} | {seconds:.2f} |")

    # serve: a declared length over the limit, and what clients learn of the model's file.
    server = subprocess.Popen([binary, "serve", str(model), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = next(w for w in server.stdout.readline().split() if w.startswith("http://"))
        host, port = url[len("http://"):].rstrip("/").split(":")
        start = time.perf_counter()
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 1000000000000\r\n\r\nabc")
            status = s.recv(4096).split(b"\r\n", 1)[0].decode()
        print()
        print(f"serve, `Content-Length: 10^12` and a 3-byte body: `{status}` "
              f"after {time.perf_counter() - start:.3f} s")
        info = json.load(urllib.request.urlopen(url + "api/model"))
        print(f"serve, GET /api/model: file {info['file']!r} (served from {model})")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
