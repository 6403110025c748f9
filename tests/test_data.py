import io

import cv2
import numpy as np
import pytest
from PIL import Image

from cvapps.data.classification import image_folder, read_csv, resolve_dataset
from cvapps.data.io import decode_image, list_images, read_image
from cvapps.errors import DataError

from conftest import colour_image, write_image


def _jpeg(rgb, exif=None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(rgb)
    if exif is not None:
        im.save(buf, "JPEG", exif=exif)
    else:
        im.save(buf, "JPEG")
    return buf.getvalue()


def test_read_image_rgb_and_grey(tmp_path):
    rgb = colour_image((200, 10, 10))
    p = write_image(tmp_path / "a.png", rgb)
    out = read_image(p)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert out[..., 0].mean() > 150 and out[..., 2].mean() < 60  # RGB order, not BGR
    g = tmp_path / "g.png"
    cv2.imwrite(str(g), np.full((10, 12), 77, np.uint8))
    assert read_image(g).shape == (10, 12, 3)


def test_exif_orientation_is_applied():
    rgb = np.zeros((20, 40, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    out = decode_image(_jpeg(rgb, exif.tobytes()), "x.jpg")
    assert out.shape[:2] == (40, 20)


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"),
    (b"hello, I am text", "not a decodable image"),
])
def test_bad_files_raise_data_error_naming_file(tmp_path, content, message):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        read_image(p)
    assert str(p) in str(e.value)


def test_corrupt_jpeg(tmp_path):
    data = _jpeg(colour_image((1, 2, 3), size=(64, 64)))
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt JPEG"):
        read_image(p)


def test_missing_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no images"):
        list_images(tmp_path / "empty")


def test_image_folder_and_resolve(colour_folder):
    tr, va = resolve_dataset(str(colour_folder))
    assert tr.labels == ["blue", "green", "red"] and len(tr) == 18 and len(va) == 9
    assert tr.kind == "multiclass" and sorted(set(tr.targets)) == [0, 1, 2]
    with pytest.raises(DataError, match="not one of the model's classes"):
        image_folder(colour_folder / "train", labels=["blue", "green"])


def test_csv_kinds(tmp_path):
    (tmp_path / "mc.csv").write_text("path,label\na.png,cat\nb.png,dog\n")
    d = read_csv(tmp_path / "mc.csv")
    assert d.kind == "multiclass" and d.labels == ["cat", "dog"] and d.targets == [0, 1]
    assert d.paths[0] == tmp_path / "a.png"
    (tmp_path / "ml.csv").write_text("a.png,cat;dog\nb.png,dog\n")
    d = read_csv(tmp_path / "ml.csv")
    assert d.kind == "multilabel" and d.targets == [[0, 1], [1]]
    assert d.target_tensor().tolist() == [[1.0, 1.0], [0.0, 1.0]]
    (tmp_path / "rg.csv").write_text("a.png,1.5\nb.png,-2\n")
    d = read_csv(tmp_path / "rg.csv")
    assert d.kind == "regression" and d.targets == [1.5, -2.0]


def test_csv_unknown_class_names_file_and_row(tmp_path):
    (tmp_path / "val.csv").write_text("a.png,cat\nb.png,horse\n")
    with pytest.raises(DataError) as e:
        read_csv(tmp_path / "val.csv", labels=["cat", "dog"])
    assert "val.csv" in str(e.value) and "row 2" in str(e.value) and "'horse'" in str(e.value)


@pytest.mark.parametrize("threads", [1, 3])
def test_prefetch_threads_keep_source_order_and_errors(tmp_path, threads):
    """Still images are read and prepared by several threads; frames still come out in the
    sources' order, a corrupt file as an error frame in its place."""
    from cvapps.data.sources import iter_frames, prefetch

    paths = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.png"
        if i == 5:
            p.write_bytes(b"not a png")
        else:
            write_image(p, np.full((8 + i, 10, 3), i * 20, np.uint8))
        paths.append(p)

    class Pre:  # the hook sees the decoded image: its payload is the image's height
        def prepare(self, image, source, frame):
            return image.shape[0]

    frames = list(prefetch(iter_frames(paths), Pre(), maxsize=4, threads=threads))
    assert [f.source for f in frames] == [str(p) for p in paths]
    assert [f.payload for f in frames] == [8 + i if i != 5 else None for i in range(12)]
    assert frames[5].error is not None and "05.png" in frames[5].error.one_line()


def test_default_workers_follow_the_cores_and_the_environment(monkeypatch):
    from cvapps.data import loader
    from cvapps.errors import ConfigError

    monkeypatch.delenv(loader.WORKERS_ENV, raising=False)
    for n, world, want in ((1, 1, 0), (2, 1, 0), (4, 1, 3), (16, 1, 8), (8, 2, 3), (4, 2, 0)):
        monkeypatch.setattr(loader, "cores", lambda n=n: n)
        assert loader.default_workers(world) == want, (n, world)
    monkeypatch.setenv(loader.WORKERS_ENV, "5")
    assert loader.default_workers() == 5
    monkeypatch.setenv(loader.WORKERS_ENV, "many")
    with pytest.raises(ConfigError, match="CVAPPS_WORKERS"):
        loader.default_workers()


@pytest.mark.parametrize("threads", [1, 3])
def test_decode_threads_use_one_torch_thread_for_a_torch_model_only(tmp_path, threads):
    """The prepare threads run torch ops on one thread when asked (the model computes on
    torch's pool), torch's default otherwise; the caller's own count does not change."""
    import torch

    from cvapps.data.sources import iter_frames, prefetch

    paths = [write_image(tmp_path / f"{i}.png", np.zeros((8, 8, 3), np.uint8)) for i in range(4)]

    class Pre:
        def prepare(self, image, source, frame):
            return torch.get_num_threads()

    mine = torch.get_num_threads()
    one = [f.payload for f in prefetch(iter_frames(paths), Pre(), threads=threads, torch_threads=1)]
    default = [f.payload for f in prefetch(iter_frames(paths), Pre(), threads=threads, torch_threads=None)]
    assert one == [1] * 4 and torch.get_num_threads() == mine
    if mine > 1:
        assert default == [mine] * 4


def test_batches_are_laid_out_for_their_model():
    """Prepared inputs are contiguous (made in the decode threads); a PyTorch model gets
    channels_last batches, ONNX Runtime NCHW ones, each needing no further copy."""
    import torch

    from cvapps.data.transforms import EvalTransform, Letterbox
    from cvapps.runtimes import OnnxModel
    from cvapps.tasks.batch import memory_format, prepare_threads, to_batch

    img = np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8)
    ev = EvalTransform((0.5,) * 3, (0.5,) * 3, 16, 20)
    lb = Letterbox((0.5,) * 3, (0.5,) * 3, (24, 24))
    for pre in (ev, lb):
        u8 = pre.prepare(img)[0]
        assert u8.shape[0] == 3 and u8.is_contiguous()
        x, _ = to_batch(pre, [u8, u8], torch.device("cpu"), torch.contiguous_format)
        assert x.is_contiguous()
        x, _ = to_batch(pre, [u8, u8], torch.device("cpu"))
        assert x.is_contiguous(memory_format=torch.channels_last)
    ort = object.__new__(OnnxModel)
    assert memory_format(ort) == torch.contiguous_format and prepare_threads(ort) is None
    torch_model = torch.nn.Linear(1, 1)
    torch_model.device = torch.device("cpu")
    assert memory_format(torch_model) == torch.channels_last and prepare_threads(torch_model) == 1
