"""Regenerate the .tflite fixtures of tests/test_runtimes.py (TFLite conversion needs TensorFlow,
which the test environment does not have): tiny seeded models on the smallest backbone, one
classifier (2-D outputs) and one segmenter (4-D outputs: NHWC in the file).

    CVAPPS_TFLITE_PYTHON=/path/to/venv-with-onnx2tf/bin/python .venv/bin/python tests/data/make_tflite_fixtures.py
"""

from pathlib import Path

import torch

import cvapps
from cvapps.runtimes.litert import write_tflite

HERE = Path(__file__).resolve().parent


def tiny(task: str):
    torch.manual_seed(0)
    kw = {"segment": {"kind": "selfie", "labels": ["background", "person"]}}.get(task, {"labels": ["a", "b", "c"]})
    return cvapps.create_model(task, "selfie_encoder", img_size=32, **kw).eval()


if __name__ == "__main__":
    for task in ("classify", "segment"):  # noqa: the tasks of the fixtures
        print(write_tflite(tiny(task), HERE / f"tiny_{task}.tflite"))
