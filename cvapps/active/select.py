"""Pool scoring and selection for any task. Scores (and, for core-set, float16 embeddings)
are appended to ``out/scores.csv`` / ``out/embeddings.f16`` as batches finish, so an
interrupted run keeps its work and a re-run with the same arguments skips scored images.
Memory: one batch of images plus, for core-set, a memory-mapped N x D float16 array."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

import cv2

from .. import draw
from ..data.io import is_image, read_image
from ..errors import ConfigError, DataError
from ..inference.runner import frame_batches
from ..inference.sources import expand_sources
from ..progress import Phase, note
from ..tasks.batch import to_batch
from .pseudo import write_pseudo_labels
from .strategies import STRATEGIES, hybrid, k_center_greedy, rank, random_order


def supported(model) -> list[str]:
    """Strategies this model's outputs support (its task spec says)."""
    return model.spec.strategies(model)


def per_image(values: torch.Tensor, counts: list[int] | None, reduce: str = "max") -> torch.Tensor:
    """(sum(counts), ...) crop values -> (len(counts), ...) per image (max or mean); an
    image without instances scores 0 (nothing there the model could learn from)."""
    if counts is None:
        return values
    out, i = [], 0
    for n in counts:
        chunk = values[i : i + n]
        if n == 0:
            out.append(torch.zeros(values.shape[1:], dtype=values.dtype))
        else:
            out.append(chunk.max(0).values if reduce == "max" else chunk.mean(0))
        i += n
    return torch.stack(out)


def _scores(model, x: torch.Tensor, metas: list[dict], strategy: str, mc_passes: int) -> torch.Tensor:
    """(N,) uncertainty of one batch's inputs (higher = label first; crops for top-down tasks)."""
    if strategy in ("random", "coreset"):
        return torch.zeros(x.shape[0])
    return model.spec.scores(model, x, metas, strategy, mc_passes).float().cpu()


def _read_done(scores_csv: Path) -> dict[str, float]:
    if not scores_csv.is_file():
        return {}
    with open(scores_csv, newline="") as f:
        return {r["path"]: float(r["score"]) for r in csv.DictReader(f)}


@torch.inference_mode()
def select(model, pool, budget: int, strategy: str = "entropy", exclude: str | None = None,
           out: str = "runs/select", batch_size: int = 16, mc_passes: int = 10, k: int = 5, seed: int = 0,
           copy_to: str | None = None, link: bool = False, pseudo_label: float | None = None,
           console: Console | None = None) -> list[dict]:
    """Rank the images of ``pool`` (folder, glob, list file, or paths) and pick ``budget``.
    Writes out/selection.csv + .json (path, score, rank, strategy) and out/contact_sheet.png;
    with ``copy_to`` copies the picks there (``link=True``: symbolic links to the originals,
    for pools too large to duplicate); with ``pseudo_label`` (a confidence threshold)
    also writes the confident predictions on the rest of the pool as training labels
    (cvapps.active.pseudo). Returns the selection rows."""
    console = console or Console(stderr=True, markup=False)
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}", hint=f"one of {', '.join(STRATEGIES)}")
    ok = supported(model)
    if strategy not in ok:
        raise ConfigError(f"strategy {strategy!r} needs {STRATEGIES[strategy].needs}, which a {model.task} "
                          f"model does not provide", hint=f"strategies for this model: {', '.join(ok)}")
    items = [p for p in expand_sources(pool if isinstance(pool, (list, tuple)) else [pool])
             if isinstance(p, Path) and is_image(p)]
    if exclude:
        ex = {ln.strip() for ln in Path(exclude).read_text().splitlines() if ln.strip()}
        items = [p for p in items if str(p) not in ex and p.name not in ex]
    if not items:
        raise DataError("no images left in the pool to score", path=str(pool))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores_csv, emb_file = out_dir / "scores.csv", out_dir / "embeddings.f16"
    state = {"strategy": strategy, "task": model.task, "labels": model.labels}
    state_file = out_dir / "state.json"
    if state_file.is_file() and json.loads(state_file.read_text()) != state:
        raise ConfigError(f"{out_dir} holds scores of another strategy or model", path=str(state_file),
                          hint="use a new --out, or delete that folder")
    state_file.write_text(json.dumps(state))
    done = _read_done(scores_csv)
    todo = [p for p in items if str(p) not in done]
    need_emb = strategy in ("coreset", "hybrid")
    if need_emb and emb_file.exists():  # a kill between the two writes leaves extra embedding rows
        with open(emb_file, "r+b") as ef:
            ef.truncate(len(done) * model.backbone.out_channels * 2)
    if done:
        console.print(f"resuming: {len(done)} images already scored in {scores_csv}")
    model.eval()
    pre = model.preprocessor()
    new_file = not scores_csv.exists()
    with open(scores_csv, "a", newline="") as f, open(emb_file, "ab") as ef:
        w = csv.writer(f)
        if new_file:
            w.writerow(["path", "score"])
        with Phase(console, "scoring", len(todo)) as bar:

            def skipped(fr) -> None:
                note(console, "skipped", fr.error.one_line())
                bar.advance(1)

            for good in frame_batches(todo, pre, batch_size, on_error=skipped):
                x, counts = to_batch(pre, [fr.payload[0] for fr in good], model.device)  # counts: crops per image
                metas = [fr.payload[1] for fr in good]
                s = per_image(_scores(model, x, metas, strategy, mc_passes), counts) if len(x) else \
                    torch.zeros(len(good))
                rows = [[fr.source, f"{float(v):.6g}"] for fr, v in zip(good, s)]
                if need_emb:
                    crops = model.embed(x).cpu() if len(x) else torch.zeros(0, model.backbone.out_channels)
                    ef.write(per_image(crops, counts, "mean").numpy().astype(np.float16).tobytes())
                    ef.flush()
                w.writerows(rows)
                f.flush()
                bar.advance(len(good))
    done = _read_done(scores_csv)
    order_paths = list(done)
    scores = torch.tensor([done[p] for p in order_paths])
    wanted = {str(p) for p in items}
    keep = [i for i, p in enumerate(order_paths) if p in wanted]
    # the score column: the uncertainty; core-set: the embedding distance to what was already
    # covered when the image was picked; random: none
    shown: dict[int, float | None] = {}
    if strategy == "random":
        picks = [keep[i] for i in random_order(len(keep), budget, seed)]
        shown = {i: None for i in picks}
    elif need_emb:
        d = model.backbone.out_channels
        emb = torch.from_numpy(np.memmap(emb_file, np.float16, "r").reshape(-1, d)[keep].astype(np.float32))
        if strategy == "coreset":
            local, gaps = k_center_greedy(emb, budget, with_distances=True)
            shown = {keep[i]: g for i, g in zip(local, gaps)}
        else:
            local = hybrid(scores[keep], emb, budget, k)
        picks = [keep[i] for i in local]
    else:
        picks = [keep[i] for i in rank(scores[keep], budget)]
    sel = [{"path": order_paths[i], "score": shown.get(i, float(scores[i])), "rank": r + 1, "strategy": strategy}
           for r, i in enumerate(picks)]
    _write(sel, out_dir, copy_to, model, link)
    if pseudo_label is not None:
        chosen = {r["path"] for r in sel}
        info = write_pseudo_labels(model, [p for p in items if str(p) not in chosen], pseudo_label, out_dir,
                                   batch_size)
        console.print(f"pseudo-labels for {info['written']} images (confidence >= {pseudo_label}) in {info['file']}")
    return sel


def _write(sel: list[dict], out_dir: Path, copy_to: str | None, model=None, link: bool = False) -> None:
    with open(out_dir / "selection.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["rank", "path", "score", "strategy"])
        w.writeheader()
        w.writerows(sel)
    (out_dir / "selection.json").write_text(json.dumps(sel, indent=1))
    contact_sheet(sel, out_dir / "contact_sheet.png", model)
    if copy_to:
        dest = Path(copy_to)
        dest.mkdir(parents=True, exist_ok=True)
        for row in sel:
            target = dest / f"{row['rank']:04d}_{Path(row['path']).name}"
            if link:
                target.unlink(missing_ok=True)  # a rerun replaces its own links
                target.symlink_to(Path(row["path"]).resolve())
            else:
                shutil.copy2(row["path"], target)


def contact_sheet(sel: list[dict], path: Path, model=None, cols: int = 5, tile: int = 256, limit: int = 60) -> None:
    """Grid of the selected images with rank and score under each, the model's predictions
    drawn on the tiles at tile resolution (so labels stay readable)."""
    rows = sel[:limit]
    if not rows:
        return
    cols = min(cols, len(rows))
    n_rows = (len(rows) + cols - 1) // cols
    cap = draw.text_size((tile, tile), 1.6)
    band = int(cap * 1.6)
    sheet = np.full((n_rows * (tile + band), cols * tile, 3), 255, np.uint8)
    captions = []
    for i, row in enumerate(rows):
        img = read_image(row["path"])
        s = tile / max(img.shape[:2])
        small = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                           interpolation=cv2.INTER_AREA)
        if model is not None:
            small = model.predict(img)[0].resized(small.shape[1] / img.shape[1], small.shape[0] / img.shape[0]) \
                .draw(small)
        y, x = (i // cols) * (tile + band), (i % cols) * tile
        sheet[y : y + small.shape[0], x : x + small.shape[1]] = small
        score = "-" if row["score"] is None else f"{row['score']:.3g}"
        captions.append((f"#{row['rank']}  {score}", x + 2, y + tile + 2, (255, 255, 255)))
    sheet = draw.labels(sheet, captions, cap, above=False)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
