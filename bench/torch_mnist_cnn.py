"""The network of Keras's mnist_cnn.py in PyTorch, timed as mnist-cnn's bench.

Needs `pip install torch` (the CPU wheel is enough). Threads: BENCH_THREADS, default all cores.
`--bf16`: PyTorch's fastest CPU setting on processors with bf16 (AVX512_BF16, AMX): autocast
to bfloat16 and channels-last tensors. Run through bench/compare.py.
"""

import contextlib
import os
import sys
import time

import torch
from torch import nn

import common
from torch_net import MnistCnn

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
torch.manual_seed(1)
x_train, y_train, x_test, _ = (torch.from_numpy(a) for a in common.load())

BF16 = "--bf16" in sys.argv
model = MnistCnn()
assert sum(p.numel() for p in model.parameters()) == 1_199_882
if BF16:
    model = model.to(memory_format=torch.channels_last)
    x_train = x_train.contiguous(memory_format=torch.channels_last)
    x_test = x_test.contiguous(memory_format=torch.channels_last)


def precision():
    return torch.autocast("cpu", dtype=torch.bfloat16) if BF16 else contextlib.nullcontext()


optim = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-7)
loss_fn = nn.CrossEntropyLoss()  # softmax + categorical cross-entropy, as Keras's


def step(xb, yb):
    model.train()
    optim.zero_grad()
    with precision():
        loss = loss_fn(model(xb), yb)
    loss.backward()
    optim.step()
    loss.item()


def evaluate(x):
    model.eval()
    with torch.no_grad(), precision():
        for i in range(0, len(x), common.EVAL_BATCH):
            model(x[i:i + common.EVAL_BATCH]).argmax(1)


ms = common.time_steps(step, x_train, y_train, time.perf_counter)
rate = common.time_eval(evaluate, x_test, time.perf_counter)
setting = ", bf16 autocast + channels_last" if BF16 else ""
common.report(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads{setting})", ms, rate)
