"""Shared fixtures: tiny synthetic images and models (no network, no ../shared)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

os.environ.setdefault("CVAPPS_OFFLINE", "1")  # tests never touch the network
# predictions compared across runs and runtimes are fp32's on every CPU: --precision auto would
# choose bf16 on CPUs that have it (tests/test_runtimes.py tests that choice with it set explicitly)
os.environ["CVAPPS_PRECISION"] = "fp32"
# nothing the tests make (e.g. the ONNX graphs predict caches) lands in the user's ~/.cache/cvapps
os.environ["CVAPPS_HOME"] = _TEST_HOME = tempfile.mkdtemp(prefix="cvapps-test-home-")
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))

# Tests whose outcome depends on how floats round: two computation paths compared, or a
# threshold on what training reaches. oneDNN rounds differently per CPU (AMX, AVX-512, AVX2)
# and thread count, so `.ci/run` runs these a second time under another ISA with one thread
# (`make test-isa`): a test that passes only by a near-tie fails on any machine. Add a test
# here when its assertion compares floats from two paths or a trained metric with a bound.
ROUNDING_SENSITIVE = (
    "test_slicing.py::", "test_face_check.py::", "test_faces.py::test_top_down", "test_tracking.py::test_stream_equals",
    "test_keypoints.py::test_pose_heatmap_overfits", "test_keypoints.py::test_landmark_heads_overfit",
    "test_distill_seg_kp.py::test_landmark_student", "test_export.py::test_onnx_raw_outputs_match_pytorch",
    "test_export.py::test_cli_onnxruntime_backend_json_equals_pytorch", "test_export.py::test_nms_in_graph",
    "test_export.py::test_auto_backend_exports_once", "test_bundle.py::test_shared_backbone",
    "test_bundle.py::test_a_shared_pass_runs_on_onnx", "test_detection_model.py::test_overfits_four_images",
    "test_detection_model.py::test_round_trip", "test_movenet.py::", "test_facemesh.py::", "test_selfie.py::",
    "test_training.py::test_a_working_start_stays_best",
)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TEST_HOME, ignore_errors=True)  # ~400 MB of caches a run would leave in /tmp


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(key in item.nodeid for key in ROUNDING_SENSITIVE):
            item.add_marker(pytest.mark.isa)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def write_coco_keypoints(folder: Path, names: list[str], n: int, seed: int = 6) -> Path:
    """FOLDER/kp.json: ``n`` random 96 x 80 images (FOLDER/p{i}.png), one instance each (box
    15..65) with every point of ``names`` labelled at random inside it."""
    import json

    rng = np.random.default_rng(seed)
    k = len(names)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "instance", "keypoints": list(names),
                                                             "skeleton": []}]}
    for i in range(n):
        write_image(folder / f"p{i}.png", rng.integers(0, 255, (96, 80, 3), np.uint8))
        coco["images"].append({"id": i + 1, "file_name": f"p{i}.png", "width": 80, "height": 96})
        kp = np.concatenate([rng.uniform(20, 60, (k, 2)), np.full((k, 1), 2)], 1)
        coco["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [15, 15, 50, 50],
                                    "area": 2500, "iscrowd": 0, "keypoints": kp.reshape(-1).tolist(),
                                    "num_keypoints": k})
    (folder / "kp.json").write_text(json.dumps(coco))
    return folder / "kp.json"


def colour_image(colour: tuple[int, int, int], size=(48, 64), seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: a flat colour with mild noise (so images are not identical)."""
    rng = np.random.default_rng(seed)
    img = np.empty((*size, 3), np.uint8)
    img[:] = colour
    noise = rng.integers(-20, 21, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture
def colour_folder(tmp_path) -> Path:
    """ImageFolder root with train/ and val/, 3 colour classes, PNG images."""
    root = tmp_path / "colours"
    for split, n in (("train", 6), ("val", 3)):
        for c, rgb in COLOURS.items():
            for i in range(n):
                write_image(root / split / c / f"{c}{i}.png", colour_image(rgb, seed=i + (100 if split == "val" else 0)))
    return root


@pytest.fixture(scope="session")
def tiny_model():
    import cvapps

    torch.manual_seed(0)
    return cvapps.create_model("classify", "mobilenet_v3_small", labels=list(COLOURS), img_size=64)


@pytest.fixture
def tiny_model_file(tmp_path, tiny_model) -> Path:
    import cvapps

    return cvapps.save(tiny_model, tmp_path / "tiny.safetensors")


def interrupt_at_epoch(monkeypatch, epoch: int):
    """Training raises KeyboardInterrupt (as Ctrl-C or a kill would) when epoch ``epoch``
    (0-based) starts; returns the undo."""
    from cvapps.training import trainer as trainer_mod

    real = trainer_mod.unfreeze_schedule

    def stop(model, at, *a, **k):
        if at == epoch:
            raise KeyboardInterrupt
        return real(model, at, *a, **k)

    monkeypatch.setattr(trainer_mod, "unfreeze_schedule", stop)
    return lambda: monkeypatch.setattr(trainer_mod, "unfreeze_schedule", real)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``cvapps ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from cvapps.cli import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def fixture_home(tmp_path_factory):
    """One private $CVAPPS_HOME for every converted-model fixture of the session."""
    home = tmp_path_factory.mktemp("cvapps_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("CVAPPS_HOME", str(home))
    yield home
    mp.undo()


def _converted_fixture(home, names: list[str]):
    """The converted pretrained models ``names`` built from their manifests' configs with
    seeded random weights, placed in the fixtures' $CVAPPS_HOME cache and registered with
    those files' digests: tests use the real architecture and loading path, never the network."""
    from dataclasses import replace

    from cvapps import weights
    from cvapps.modelfile import save_model, tensor_digest
    from cvapps.tasks import model_class

    mp = pytest.MonkeyPatch()
    models = []
    for name in names:
        spec = weights.get_spec(name)
        torch.manual_seed(0)
        model = model_class(spec.task).from_config(spec.config).eval()
        save_model(model, home / "weights" / spec.filename)
        mp.setitem(weights.all_weights(), spec.name, replace(spec, sha256=tensor_digest(model.state_dict())))
        models.append(model)
    return models, mp


def converted_model(name: str, doc: str):
    """A session fixture: the converted pretrained model ``name``, weights from a fixture."""

    @pytest.fixture(scope="session")
    def fixture(fixture_home):
        (model,), mp = _converted_fixture(fixture_home, [name])
        yield model
        mp.undo()

    fixture.__doc__ = doc
    return fixture


@pytest.fixture(scope="module")
def tiny_detector():
    """A small random detector (2 classes, 96 px) whose BatchNorm statistics come from
    real-ish inputs, so it gives confident, varied boxes."""
    import cvapps

    torch.manual_seed(0)
    det = cvapps.create_model("detect", "mobilenet_v3_small", labels=["a", "b"], img_size=96)
    det.train()
    with torch.no_grad():
        det(torch.rand(8, 3, 96, 96))
    return det.eval()


coco_detector = converted_model("ssd_mobilenet_v2.coco", "The default COCO detector.")
pose_model = converted_model("movenet_lightning.coco17", "The default pose model for video (MoveNet Lightning).")
thunder_model = converted_model("movenet_thunder.coco17", "The default pose model for photos (MoveNet Thunder).")
facemesh_model = converted_model("facemesh.mediapipe", "The dense face landmark model (FaceMesh).")
selfie_model = converted_model("person.mediapipe", "Person segmentation by name (MediaPipe selfie segmentation).")
face_detector = converted_model("retinaface.face5", "The default landmark model / face-box source (RetinaFace).")
hand_model = converted_model("hand21.mediapipe", "The hand landmark model (MediaPipe's, full).")
palm_detector = converted_model("palm.mediapipe", "The hand model's palm detector (MediaPipe's, full).")


def train_steps(model, x, targets, lr: float, steps: int = 4) -> list[float]:
    """The losses of ``steps`` AdamW steps of ``model`` (in train mode) on one batch."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr)
    losses = []
    for _ in range(steps):
        loss = model.loss(model(x), targets)["loss"]
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(float(loss))
    return losses
