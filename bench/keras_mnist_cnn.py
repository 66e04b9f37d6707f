"""The network of Keras's mnist_cnn.py in Keras 3 / TensorFlow, timed as mnist-cnn's bench.

Needs `pip install tensorflow-cpu` (or tensorflow). Run through bench/compare.py.

    python3 bench/keras_mnist_cnn.py --full-run [SEED]

instead trains it as mnist_cnn.py does (12 epochs, batch 128, shuffled, validated on the test
set) and prints Keras's log and `Test loss:` / `Test accuracy:`, the reference for
`mnist-cnn train`'s accuracy.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import common  # noqa: E402

x_train, y_train, x_test, _ = common.load()
# Keras's example is channels-last.
x_train = np.transpose(x_train, (0, 2, 3, 1))
x_test = np.transpose(x_test, (0, 2, 3, 1))
y_train = keras.utils.to_categorical(y_train, 10)
full_run = "--full-run" in sys.argv
seed = int(sys.argv[2]) if full_run and len(sys.argv) > 2 else 1

keras.utils.set_random_seed(seed)
model = keras.Sequential([
    keras.Input((28, 28, 1)),
    keras.layers.Conv2D(32, 3, activation="relu"),
    keras.layers.Conv2D(64, 3, activation="relu"),
    keras.layers.MaxPooling2D(2),
    keras.layers.Dropout(0.35),
    keras.layers.Flatten(),
    keras.layers.Dense(128, activation="relu"),
    keras.layers.Dropout(0.5),
    keras.layers.Dense(10, activation="softmax"),
])
assert model.count_params() == 1_199_882
model.compile(
    loss="categorical_crossentropy",
    optimizer=keras.optimizers.Adadelta(learning_rate=1.0, rho=0.95, epsilon=1e-7),
    metrics=["accuracy"],
)

if full_run:
    _, _, _, test_labels = common.load()
    y_test = keras.utils.to_categorical(test_labels, 10)
    model.fit(x_train, y_train, batch_size=common.BATCH, epochs=12, verbose=2,
              validation_data=(x_test, y_test))
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print("Test loss:", loss)
    print("Test accuracy:", accuracy)
    sys.exit(0)

ms = common.time_steps(lambda xb, yb: model.train_on_batch(xb, yb), x_train, y_train, time.perf_counter)
rate = common.time_eval(
    lambda x: model.predict(x, batch_size=common.EVAL_BATCH, verbose=0), x_test, time.perf_counter
)
common.report(f"Keras {keras.__version__} / TensorFlow {tf.__version__}", ms, rate)
