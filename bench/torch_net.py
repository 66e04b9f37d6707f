"""The network of Keras's mnist_cnn.py as a PyTorch module whose attribute names are the
tensor names mnist-cnn exports (`conv1.weight` … `dense2.bias`), so that

    net = MnistCnn()
    net.load_state_dict(safetensors.torch.load_file("mnist.safetensors"), strict=True)

loads `mnist-cnn export model.bin mnist.safetensors`, and `save_file(net.state_dict(), …)`
writes weights that `mnist-cnn eval/predict/serve/export` read.
"""

import torch
from torch import nn
import torch.nn.functional as F


class MnistCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.dense1 = nn.Linear(9216, 128)
        self.dense2 = nn.Linear(128, 10)
        self.dropout1 = nn.Dropout(0.35)
        self.dropout2 = nn.Dropout(0.5)

    def forward(self, x):
        """Logits for x [N, 1, 28, 28], pixels / 255."""
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = self.dropout1(x).flatten(1)
        x = self.dropout2(F.relu(self.dense1(x)))
        return self.dense2(x)
