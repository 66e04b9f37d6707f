"""The network of Keras's mnist_cnn.py in PyTorch, timed as mnist-cnn's bench.

Needs `pip install torch` (the CPU wheel is enough). Threads: BENCH_THREADS, default all cores.
Run through bench/compare.py.
"""

import os
import time

import torch
from torch import nn

import common

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
torch.manual_seed(1)
x_train, y_train, x_test, _ = (torch.from_numpy(a) for a in common.load())

model = nn.Sequential(
    nn.Conv2d(1, 32, 3), nn.ReLU(),
    nn.Conv2d(32, 64, 3), nn.ReLU(),
    nn.MaxPool2d(2), nn.Dropout(0.35), nn.Flatten(),
    nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
    nn.Linear(128, 10),
)
assert sum(p.numel() for p in model.parameters()) == 1_199_882
optim = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-7)
loss_fn = nn.CrossEntropyLoss()  # softmax + categorical cross-entropy, as Keras's


def step(xb, yb):
    model.train()
    optim.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optim.step()
    loss.item()


def evaluate(x):
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), common.EVAL_BATCH):
            model(x[i:i + common.EVAL_BATCH]).argmax(1)


ms = common.time_steps(step, x_train, y_train, time.perf_counter)
rate = common.time_eval(evaluate, x_test, time.perf_counter)
common.report(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)", ms, rate)
