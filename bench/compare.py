"""mnist-cnn against Keras/TensorFlow and PyTorch on this machine, in one sitting.

    MNIST_DATA_DIR=~/mnist python3 bench/compare.py

Runs `cargo bench --bench train_step` and, where importable by BENCH_PYTHON (default: this
Python), bench/keras_mnist_cnn.py and bench/torch_mnist_cnn.py, ROUNDS times in turn (default
1; interleaved so that a drifting machine hurts all alike), and prints each system's medians,
each round's figures, and mnist-cnn's time over each peer's. BENCH_STEPS sets the training
steps per measurement.

BENCH_BINARY=PATH runs that prebuilt `train_step` bench binary instead of `cargo bench`;
BENCH_BASELINE=PATH adds another build of it (an earlier commit, say) as a row of its own, in
the same rounds, so that a change is measured before and after in one run.
"""

import json
import os
import statistics
import subprocess
import sys

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


def peer(script, module):
    if subprocess.run([PYTHON, "-c", f"import {module}"], capture_output=True).returncode != 0:
        return None
    out = subprocess.run([PYTHON, os.path.join(HERE, script)], cwd=HERE,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(f"{script} failed:\n{out.stderr[-2000:]}\n")
        return None
    return last_json(out.stdout)


def main():
    rounds = int(os.environ.get("ROUNDS", "1"))
    runs = {}
    systems = [("mnist-cnn", lambda: ours(os.environ.get("BENCH_BINARY")))]
    if os.environ.get("BENCH_BASELINE"):
        systems.append(("baseline", lambda: ours(os.environ["BENCH_BASELINE"], "(baseline)")))
    systems += [("keras", lambda: peer("keras_mnist_cnn.py", "tensorflow")),
                ("torch", lambda: peer("torch_mnist_cnn.py", "torch"))]
    for _ in range(rounds):
        for name, run in systems:
            result = run()
            if result is not None:
                runs.setdefault(name, []).append(result)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in KEYS} | {"system": rs[0]["system"]}
               for name, rs in runs.items()}
    print(f"Medians of {rounds} round(s), BENCH_STEPS={os.environ.get('BENCH_STEPS', '20')}, "
          f"{os.cpu_count()} cores\n")
    print("| system | ms per step | s per epoch | eval images/s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for m in medians.values():
        print(f"| {m['system']} | {m['ms_per_step']:.0f} | {m['seconds_per_epoch']:.0f} "
              f"| {m['eval_images_per_s']:.0f} | {m['peak_rss_mib']:.0f} |")
    print("\nEach round (ms per step / eval images/s):")
    for name, rs in runs.items():
        rounds_text = ", ".join(f"{r['ms_per_step']:.0f} / {r['eval_images_per_s']:.0f}" for r in rs)
        print(f"- {name}: {rounds_text}")
    me = medians.get("mnist-cnn")
    for name, m in medians.items():
        if name == "mnist-cnn" or me is None:
            continue
        print(f"\nmnist-cnn over {m['system']}: step time x{me['ms_per_step'] / m['ms_per_step']:.2f}, "
              f"epoch time x{me['seconds_per_epoch'] / m['seconds_per_epoch']:.2f}, "
              f"eval rate x{me['eval_images_per_s'] / m['eval_images_per_s']:.2f}")
    missing = {"keras", "torch"} - medians.keys()
    if missing:
        print(f"\nnot measured (not installed for {PYTHON}): {', '.join(sorted(missing))}")


if __name__ == "__main__":
    main()
