"""The .tflite fixtures of tests/test_runtimes.py: regenerate them, or check one (``--check TASK``:
prints the largest raw-output difference to PyTorch and the prediction agreement as JSON; the
test runs it in its own process — LiteRT beside everything a full suite has loaded crashed).

Regenerate the .tflite fixtures (TFLite conversion needs TensorFlow,
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


def check(task: str) -> dict:
    import numpy as np

    model = tiny(task)
    graph = cvapps.load(HERE / f"tiny_{task}.tflite")
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        want = model(x)
    got = graph(x)
    diffs = {n: [list(getattr(want, n).shape) == list(getattr(got, n).shape),
                 float((getattr(want, n).float() - getattr(got, n)).abs().max()),
                 float(getattr(want, n).abs().max())] for n in graph.names}
    img = np.random.default_rng(3).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    p, q = model.predict(img)[0], graph.predict(img)[0]
    kw = {"margin": 0.0} if hasattr(p, "topk") else {}  # every answer compared
    return {"backend": graph.backend, "task": graph.task, "outputs": diffs, "agreement": list(p.agreement(q, **kw))}


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:2] == ["--check"]:
        print(json.dumps(check(sys.argv[2])))
    else:
        for task in ("classify", "segment"):
            print(write_tflite(tiny(task), HERE / f"tiny_{task}.tflite"))
