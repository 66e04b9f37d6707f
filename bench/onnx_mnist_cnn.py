"""Evaluation peers that run mnist-cnn's exported ONNX file: ONNX Runtime, and OpenVINO at
its default precision and forced to f32, timed as mnist-cnn's bench times `eval` (median
images/s of 3 passes over the test set in batches of 500).

    python3 bench/onnx_mnist_cnn.py onnxruntime|openvino|openvino-f32 MODEL.onnx

Run through bench/compare.py, which exports the file. Prints one JSON line.
"""

import sys
import time

import common


def onnxruntime_eval(path):
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def evaluate(x):
        for i in range(0, len(x), common.EVAL_BATCH):
            session.run(["probabilities"], {"input": x[i:i + common.EVAL_BATCH]})[0].argmax(1)

    return f"ONNX Runtime {ort.__version__} (f32)", evaluate


def openvino_eval(path, precision=None):
    import openvino as ov
    core = ov.Core()
    model = core.read_model(path)
    model.reshape({"input": [common.EVAL_BATCH, 1, 28, 28]})
    config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    compiled = core.compile_model(model, "CPU", config)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    chosen = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    request = compiled.create_infer_request()

    def evaluate(x):
        for i in range(0, len(x), common.EVAL_BATCH):
            request.infer({"input": x[i:i + common.EVAL_BATCH]})
            request.get_tensor("probabilities").data.argmax(1)

    setting = "forced" if precision else "default"
    return f"OpenVINO {ov.__version__.split('-')[0]} ({chosen}, {setting})", evaluate


def main():
    runtime, path = sys.argv[1], sys.argv[2]
    _, _, x_test, _ = common.load()
    system, evaluate = {
        "onnxruntime": lambda: onnxruntime_eval(path),
        "openvino": lambda: openvino_eval(path),
        "openvino-f32": lambda: openvino_eval(path, "f32"),
    }[runtime]()
    evaluate(x_test[:common.EVAL_BATCH])  # warm-up: compilation, thread pools
    rate = common.time_eval(evaluate, x_test, time.perf_counter)
    common.report(system, None, rate)


if __name__ == "__main__":
    main()
