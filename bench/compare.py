"""mnist-cnn against Keras/TensorFlow, PyTorch, ONNX Runtime and OpenVINO on this machine, in
one sitting.

    MNIST_DATA_DIR=~/mnist python3 bench/compare.py

Runs `cargo bench --bench train_step` (with our opt-in bf16 evaluation as a row of its own
where the processor has AVX512_BF16) and, where importable by BENCH_PYTHON (default: this
Python), bench/keras_mnist_cnn.py, bench/torch_mnist_cnn.py (f32, and with --bf16: autocast
to bfloat16 and channels-last, its fastest CPU setting where the processor has bf16) and, as
evaluation-only peers,
bench/onnx_mnist_cnn.py (ONNX Runtime; OpenVINO at its default precision and forced to f32)
on the ONNX file `mnist-cnn export` writes of a briefly trained model, ROUNDS times in turn
(default 1; interleaved so that a drifting machine hurts all alike), and prints each system's
medians, each round's figures, and mnist-cnn's time over each peer's. BENCH_STEPS sets the
training steps per measurement. MNIST_CNN sets the mnist-cnn binary for the export (default:
built with `cargo build --release`).

BENCH_BINARY=PATH runs that prebuilt `train_step` bench binary instead of `cargo bench`;
BENCH_BASELINE=PATH adds another build of it (an earlier commit, say) as a row of its own, in
the same rounds, so that a change is measured before and after in one run.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PYTHON = os.environ.get("BENCH_PYTHON", sys.executable)
KEYS = ["ms_per_step", "seconds_per_epoch", "eval_images_per_s", "peak_rss_mib"]


def last_json(text):
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no result line in:\n" + text)


def ours(binary=None, label=None):
    env = dict(os.environ, BENCH_FORMAT="json")
    command = [binary] if binary else ["cargo", "bench", "--quiet", "--bench", "train_step"]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    result = last_json(out.stdout)
    if label:
        result["system"] += f" {label}"
    return result


def peer(script, module, *args):
    if subprocess.run([PYTHON, "-c", f"import {module}"], capture_output=True).returncode != 0:
        return None
    out = subprocess.run([PYTHON, os.path.join(HERE, script), *args], cwd=HERE,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(f"{script} failed:\n{out.stderr[-2000:]}\n")
        return None
    return last_json(out.stdout)


def exported_onnx():
    """The ONNX export of a model trained for one epoch on 512 images (speed does not depend
    on the weights)."""
    binary = os.environ.get("MNIST_CNN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "mnist-cnn")
    work = tempfile.mkdtemp()
    data = os.environ.get("MNIST_DATA_DIR", os.path.join(ROOT, "data", "mnist-subset"))
    model, onnx = os.path.join(work, "model.bin"), os.path.join(work, "mnist.onnx")
    subprocess.run([binary, "train", "--epochs", "1", "--limit-train", "512", "--limit-test", "500",
                    "--verbose", "0", "--data-dir", data, "--out", model],
                   check=True, capture_output=True)
    subprocess.run([binary, "export", model, onnx], check=True, capture_output=True)
    return onnx


def fmt(value):
    return "—" if value is None else f"{value:.0f}"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    rounds = int(os.environ.get("ROUNDS", "1"))
    runs = {}
    onnx = exported_onnx()
    systems = [("mnist-cnn", lambda: ours(os.environ.get("BENCH_BINARY")))]
    if os.environ.get("BENCH_BASELINE"):
        systems.append(("baseline", lambda: ours(os.environ["BENCH_BASELINE"], "(baseline)")))
    systems += [("keras", lambda: peer("keras_mnist_cnn.py", "tensorflow")),
                ("torch", lambda: peer("torch_mnist_cnn.py", "torch")),
                ("torch-bf16", lambda: peer("torch_mnist_cnn.py", "torch", "--bf16")),
                ("onnxruntime", lambda: peer("onnx_mnist_cnn.py", "onnxruntime", "onnxruntime", onnx)),
                ("openvino", lambda: peer("onnx_mnist_cnn.py", "openvino", "openvino", onnx)),
                ("openvino-f32", lambda: peer("onnx_mnist_cnn.py", "openvino", "openvino-f32", onnx))]
    for _ in range(rounds):
        for name, run in systems:
            result = run()
            if result is None:
                continue
            runs.setdefault(name, []).append(result)
            # Our opt-in bf16 evaluation, where the processor has it, as a row of its own.
            if name == "mnist-cnn" and result.get("bf16_eval_images_per_s") is not None:
                runs.setdefault("mnist-cnn-bf16", []).append(
                    {"system": result["system"].replace("--backend cpu", "--backend cpu-bf16, eval only"),
                     "ms_per_step": None, "seconds_per_epoch": None, "peak_rss_mib": None,
                     "eval_images_per_s": result["bf16_eval_images_per_s"]})
    medians = {name: {k: median(r[k] for r in rs) for k in KEYS} | {"system": rs[0]["system"]}
               for name, rs in runs.items()}
    print(f"{processor()}\nMedians of {rounds} round(s), BENCH_STEPS={os.environ.get('BENCH_STEPS', '20')}, "
          f"{os.cpu_count()} cores\n")
    print("| system | ms per step | s per epoch | eval images/s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for m in medians.values():
        print(f"| {m['system']} | {fmt(m['ms_per_step'])} | {fmt(m['seconds_per_epoch'])} "
              f"| {fmt(m['eval_images_per_s'])} | {fmt(m['peak_rss_mib'])} |")
    print("\nEach round (ms per step / eval images/s):")
    for name, rs in runs.items():
        rounds_text = ", ".join(f"{fmt(r['ms_per_step'])} / {fmt(r['eval_images_per_s'])}" for r in rs)
        print(f"- {name}: {rounds_text}")
    me = medians.get("mnist-cnn")
    for name, m in medians.items():
        if name in ("mnist-cnn", "mnist-cnn-bf16") or me is None:
            continue
        eval_ratio = f"eval rate x{me['eval_images_per_s'] / m['eval_images_per_s']:.3f}"
        if m["ms_per_step"] is None:
            print(f"\nmnist-cnn over {m['system']}: {eval_ratio}")
            continue
        print(f"\nmnist-cnn over {m['system']}: step time x{me['ms_per_step'] / m['ms_per_step']:.3f}, "
              f"epoch time x{me['seconds_per_epoch'] / m['seconds_per_epoch']:.3f}, {eval_ratio}")
    bf16, openvino = medians.get("mnist-cnn-bf16"), medians.get("openvino")
    if bf16 and openvino:
        print(f"\n{bf16['system']} over {openvino['system']}: "
              f"eval rate x{bf16['eval_images_per_s'] / openvino['eval_images_per_s']:.3f}")
    missing = {"keras", "torch", "onnxruntime", "openvino"} - medians.keys()
    if missing:
        print(f"\nnot measured (not installed for {PYTHON}): {', '.join(sorted(missing))}")


def processor():
    """The processor, as lscpu names it, with its family/model and widest vector extension."""
    try:
        info = dict(line.split(":", 1) for line in
                    subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                    if ":" in line)
    except OSError:
        return "processor: unknown (no lscpu)"
    get = lambda k: info.get(k, "?").strip()
    flags = get("Flags").split()
    isa = ", ".join(f for f in ["avx512f", "avx512_bf16", "amx_bf16", "avx2"] if f in flags)
    return f"Processor: {get('Model name')} (family {get('CPU family')}, model {get('Model')}; {isa})"


if __name__ == "__main__":
    main()
