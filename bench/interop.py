"""The exported model outside mnist-cnn: ONNX Runtime on the ONNX file and PyTorch on the
safetensors file classify the whole test set as `mnist-cnn eval --json` does, and weights
trained in PyTorch evaluate in mnist-cnn to the accuracy PyTorch computes for them.

    MNIST_DATA_DIR=~/mnist python3 bench/interop.py model.bin

Needs onnxruntime, onnx, torch and safetensors (`pip install onnxruntime onnx torch
safetensors`). MNIST_CNN sets the binary (default target/release/mnist-cnn). Prints a table
and exits 1 when any check fails.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.torch import load_file, save_file

import common
from torch_net import MnistCnn

HERE = os.path.dirname(os.path.abspath(__file__))
BINARY = os.environ.get("MNIST_CNN", os.path.join(HERE, "..", "target", "release", "mnist-cnn"))
TORCH_STEPS = int(os.environ.get("TORCH_STEPS", "60"))


def mnist_cnn(*args):
    out = subprocess.run([BINARY, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"mnist-cnn {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def evaluate_with(model_path):
    """`mnist-cnn eval --json --report` on the data directory's test set: (loss, accuracy,
    confusion matrix)."""
    result = json.loads(mnist_cnn("eval", model_path, "--json", "--report",
                                  "--data-dir", common.data_dir()))
    return result["loss"], result["accuracy"], np.array(result["confusion"])


def confusion(logits, labels):
    counts = np.zeros((10, 10), dtype=np.int64)
    np.add.at(counts, (labels, logits.argmax(axis=1)), 1)
    return counts


def scores(logits, labels):
    """Mean cross-entropy (log-softmax in float64 from the float32 logits) and accuracy."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(len(labels)), labels].mean()
    return float(loss), float((logits.argmax(axis=1) == labels).mean())


def torch_logits(net, x):
    net.eval()
    with torch.no_grad():
        return torch.cat([net(torch.from_numpy(x[i:i + 500])) for i in range(0, len(x), 500)]).numpy()


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else "model.bin"
    x_train, y_train, x_test, y_test = common.load()
    work = tempfile.mkdtemp()
    onnx_path, st_path = os.path.join(work, "mnist.onnx"), os.path.join(work, "mnist.safetensors")
    mnist_cnn("export", model, onnx_path)
    mnist_cnn("export", model, st_path)
    rows, failures = [], []

    loss, accuracy, counts = evaluate_with(model)
    rows.append(("mnist-cnn eval", model, loss, accuracy))

    onnx.checker.check_model(onnx.load(onnx_path), full_check=True)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    ort_logits = np.concatenate([session.run(["logits"], {"input": x_test[i:i + 500]})[0]
                                 for i in range(0, len(x_test), 500)])
    probabilities = session.run(["probabilities"], {"input": x_test[:500]})[0]
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    rows.append((f"ONNX Runtime {ort.__version__}", "mnist.onnx", *scores(ort_logits, y_test)))

    net = MnistCnn()
    net.load_state_dict(load_file(st_path), strict=True)
    pt_logits = torch_logits(net, x_test)
    rows.append((f"PyTorch {torch.__version__}", "mnist.safetensors", *scores(pt_logits, y_test)))
    same = int((ort_logits.argmax(1) == pt_logits.argmax(1)).sum())

    for (name, _, l, a), logits in zip(rows[1:], [ort_logits, pt_logits]):
        if a != accuracy or abs(l - loss) > 1e-5 * loss:
            failures.append(f"{name}: loss {l}, accuracy {a}; mnist-cnn: {loss}, {accuracy}")
        if not (confusion(logits, y_test) == counts).all():
            failures.append(f"{name}: its confusion matrix differs from mnist-cnn eval's")
    worst = max(abs(l - loss) / loss for _, _, l, _ in rows[1:])

    # Weights trained in PyTorch, evaluated by mnist-cnn.
    torch.manual_seed(7)
    trained = MnistCnn()
    optim = torch.optim.Adadelta(trained.parameters(), lr=1.0, rho=0.95, eps=1e-7)
    trained.train()
    for step in range(TORCH_STEPS):
        i = (step * common.BATCH) % (len(x_train) - common.BATCH)
        optim.zero_grad()
        batch = torch.from_numpy(x_train[i:i + common.BATCH])
        labels = torch.from_numpy(y_train[i:i + common.BATCH])
        torch.nn.functional.cross_entropy(trained(batch), labels).backward()
        optim.step()
    own_path = os.path.join(work, "pytorch-trained.safetensors")
    save_file(trained.state_dict(), own_path)
    pt_loss, pt_accuracy = scores(torch_logits(trained, x_test), y_test)
    rows.append((f"PyTorch, its own {TORCH_STEPS}-step training", "(in PyTorch)", pt_loss, pt_accuracy))
    ours_loss, ours_accuracy, own_counts = evaluate_with(own_path)
    rows.append(("mnist-cnn eval of those weights", "pytorch-trained.safetensors", ours_loss, ours_accuracy))
    own_same = (confusion(torch_logits(trained, x_test), y_test) == own_counts).all()
    if ours_accuracy != pt_accuracy or abs(ours_loss - pt_loss) > 1e-5 * pt_loss or not own_same:
        failures.append(f"PyTorch-trained weights: mnist-cnn {ours_loss}, {ours_accuracy}; "
                        f"PyTorch {pt_loss}, {pt_accuracy}")

    print(f"{len(y_test)} test images from {common.data_dir()}\n")
    print("| who | reads | loss | accuracy |")
    print("|---|---|---|---|")
    for name, what, l, a in rows:
        print(f"| {name} | {what} | {l:.10f} | {a:.4f} |")
    print(f"\nONNX Runtime and PyTorch pick the same digit for {same} of {len(y_test)} images, and "
          f"their confusion matrices {'equal' if not failures else 'differ from'} mnist-cnn eval's; largest relative loss "
          f"difference {worst:.1e}; onnx.checker (full check): passed")
    for f in failures:
        print(f"FAILED: {f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
