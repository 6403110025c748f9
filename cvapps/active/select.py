"""Pool scoring and selection for any task, over images and video frames. Scores (and, for
core-set, float16 embeddings) are appended to ``out/scores.csv`` / ``out/embeddings.f16`` as
batches finish, so an interrupted run keeps its work and a re-run with the same arguments
skips what was scored. Memory while scoring: one batch of images; while picking, for
core-set, the pool's N x D embeddings (float32)."""

from __future__ import annotations

import csv
import functools
import json
import shutil
import urllib.parse
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

import cv2

from .. import draw
from ..data.io import is_image, is_video, out_dir as checked_dir
from ..errors import ConfigError, DataError
from ..data.sources import count_frames, expand_sources, frame_batches
from ..progress import Phase, note
from ..runs import RunLock
from ..data.remote import is_remote_image, remote_bytes
from ..tasks.batch import load_input, memory_format, predict_inputs, prepare_threads, refined, run_batch, to_batch
from .handoff import write_picks
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


def _has_instances(model, pre, frames) -> torch.Tensor:
    """(N,) 1 where ``predict`` finds an instance in the frame (its threshold and its
    preprocessor's second look, e.g. the face check), else 0: a model that finds its own
    instances scores an image where it finds none 0, like top-down models do."""
    preds = refined(pre, run_batch(model, [fr.payload[0] for fr in frames], [fr.payload[1] for fr in frames],
                                   pre=pre), [fr.image for fr in frames])
    return torch.tensor([float(len(p) > 0) for p in preds])


Key = tuple  # (path, video frame index or None)


def _read_done(scores_csv: Path) -> dict[Key, float]:
    if not scores_csv.is_file():
        return {}
    with open(scores_csv, newline="") as f:
        return {(r["path"], int(r["frame"]) if r.get("frame") else None): float(r["score"]) for r in csv.DictReader(f)}


def _frames_by_video(keys: list[Key], idx) -> dict[str, list[int]]:
    near: dict[str, list[int]] = {}
    for i in idx:
        if keys[i][1] is not None:
            near.setdefault(keys[i][0], []).append(keys[i][1])
    return near


def _too_close(key: Key, near: dict[str, list[int]], min_gap: int) -> bool:
    return key[1] is not None and any(abs(key[1] - f) < min_gap for f in near.get(key[0], []))


def spaced(order, keys: list[Key], budget: int, min_gap: int, taken: list[int] = ()) -> list[int]:
    """The first ``budget`` of ``order`` such that no two frames of one video are closer than
    ``min_gap`` frames (to each other or to ``taken``); images are never in conflict."""
    picks: list[int] = []
    near = _frames_by_video(keys, taken)
    for i in order:
        if len(picks) == budget:
            break
        if _too_close(keys[i], near, min_gap):
            continue
        if keys[i][1] is not None:
            near.setdefault(keys[i][0], []).append(keys[i][1])
        picks.append(i)
    return picks


def _pick(strategy: str, keys: list[Key], scores: torch.Tensor, emb: torch.Tensor | None, budget: int, k: int,
          seed: int, min_gap: int) -> tuple[list[int], dict[int, float | None]]:
    """(picked indices into ``keys`` in pick order, the score column of picks whose score
    is not the uncertainty: core-set distance, or None for random)."""
    if strategy == "random":
        picks = spaced(random_order(len(keys), len(keys), seed), keys, budget, min_gap)
        return picks, {i: None for i in picks}
    if strategy not in ("coreset", "hybrid"):
        return spaced(rank(scores, len(keys)), keys, budget, min_gap), {}
    picks: list[int] = []
    shown: dict[int, float | None] = {}
    while len(picks) < budget:  # rounds: picks count as covered; frames next to a pick are not candidates
        taken, near = set(picks), _frames_by_video(keys, picks)
        free = [i for i in range(len(keys)) if i not in taken and not _too_close(keys[i], near, min_gap)]
        if not free:
            break
        want = budget - len(picks)
        sub = torch.cat([emb[free], emb[picks]]) if picks else (emb if len(free) == len(keys) else emb[free])
        covered = list(range(len(free), len(sub))) or None
        if strategy == "coreset":
            local, gaps = k_center_greedy(sub, want, covered, with_distances=True)
            shown.update({free[j]: g for j, g in zip(local, gaps)})
        else:
            local = hybrid(scores[free], sub, want, k, covered)
        new = spaced([free[j] for j in local], keys, want, min_gap, picks)
        if not new:
            break
        picks += new
    return picks, {i: shown[i] for i in picks if i in shown}


def check_counts(budget: int, vid_stride: int = 10, min_gap: int = 30) -> None:
    """A budget, stride or gap below 1 can do nothing: one line, before any work."""
    for name, v in (("--budget", budget), ("--vid-stride", vid_stride), ("--min-gap", min_gap)):
        if int(v) < 1:
            raise ConfigError(f"{name} must be at least 1, got {v}")


def default_strategy(model) -> str:
    """Entropy where the model gives class probabilities, else its first uncertainty score."""
    ok = supported(model)
    return "entropy" if "entropy" in ok else next((s for s in ok if s not in ("random", "coreset", "hybrid")), "coreset")


@torch.inference_mode()
def select(model, pool, budget: int, strategy: str | None = None, exclude: str | None = None,
           out: str = "runs/select", batch_size: int = 16, mc_passes: int = 10, k: int = 5, seed: int = 0,
           copy_to: str | None = None, link: bool = False, pseudo_label: float | None = None,
           vid_stride: int = 10, min_gap: int = 30, workers: int | None = None,
           console: Console | None = None, pre=None, to: tuple[str, str] | None = None, ls_config=None,
           document_root=None, model_version: str | None = None, shard: tuple[int, int] | None = None,
           scorer=None) -> list[dict]:
    """Rank the images and video frames of ``pool`` (folders, globs, list files, paths,
    videos) and pick ``budget``. Videos are sampled every ``vid_stride``-th frame; two picks
    from one video are at least ``min_gap`` frames apart (neighbouring frames are nearly the
    same picture: labelling both teaches little), and picked frames are written to
    out/frames/<video>_f<frame>.jpg for labelling. ``strategy``: default entropy, or the
    model's uncertainty score when it has no class probabilities.
    Writes out/selection.csv + .json (rank, path, source, frame, score, strategy) and
    out/contact_sheet.png; with ``copy_to`` copies the picks there (``link=True``: symbolic
    links to the originals, for pools too large to duplicate); with ``pseudo_label`` (a
    confidence threshold) also writes the confident predictions on the rest of the pool as
    training labels (cvapps.active.pseudo): its images, and the videos' other sampled frames,
    written to out/pseudo_frames/ like the picked ones. ``workers``: threads reading and
    preparing images ahead of the model (default: cvapps.data.sources.decode_threads). ``pre``:
    a configured preprocessor (``TaskSpec.predict_setup``'s: top-down keypoint models with the
    box source ``predict`` would use, so each instance crop is scored; default the model's).
    ``to`` (format, file): also hand the picks to a labelling tool (cvapps.active.handoff):
    "label-studio" tasks with the predictions as pre-annotations (``model_version``; image URLs
    under ``document_root``; ``ls_config``: the labelling config too) or "cvat" XML.
    ``shard`` (i, N): score only the i-th of N interleaved parts of the pool and record it
    (cvapps.active.shards: ``merge`` of the N folders picks as one run would). ``scorer``:
    scores the pool elsewhere (e.g. on a cluster, cvapps.scaleout), called as
    ``local_scores`` without its first two arguments. Returns the selection rows (none for a
    shard)."""
    console = console or Console(stderr=True, markup=False)
    strategy = strategy or default_strategy(model)
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}", hint=f"one of {', '.join(STRATEGIES)}")
    ok = supported(model)
    if strategy not in ok:
        raise ConfigError(f"strategy {strategy!r} needs {STRATEGIES[strategy].needs}, which a {model.task} "
                          f"model does not provide", hint=f"strategies for this model: {', '.join(ok)}")
    check_counts(budget, vid_stride, min_gap)
    if to is not None and to[0] not in ("label-studio", "cvat"):
        raise ConfigError(f"--to {to[0]!r}: picks go to label-studio or cvat")
    out_dir = checked_dir(out, "--out")
    if copy_to:
        checked_dir(copy_to, "--copy-to")
    notes: list[str] = []
    items = [p for p in expand_sources(pool if isinstance(pool, (list, tuple)) else [pool], notes)
             if (isinstance(p, Path) and (is_image(p) or is_video(p))) or is_remote_image(p)]
    for text in notes:
        note(console, "note:", text, style="yellow")
    with RunLock(out_dir, "selection"):  # scores.csv grows as batches finish: one writer at a time
        if exclude:
            ex = {ln.strip() for ln in Path(exclude).read_text().splitlines() if ln.strip()}
            items = [p for p in items if str(p) not in ex and p.name not in ex]
        if not items:
            raise DataError("no images or videos left in the pool to score", path=str(pool))
        positions = None
        if shard is not None:
            items, positions = shard_items(items, shard)
        scores_csv, emb_file = out_dir / "scores.csv", out_dir / "embeddings.f16"
        state = {"strategy": strategy, "task": model.task, "labels": model.labels, "vid_stride": vid_stride,
                 **({"shard": list(shard)} if shard is not None else {})}
        state_file = out_dir / "state.json"
        if state_file.is_file() and json.loads(state_file.read_text()) != state:
            raise ConfigError(f"{out_dir} holds scores of another strategy, model or frame stride", path=str(state_file),
                              hint="use a new --out, or delete that folder")
        state_file.write_text(json.dumps(state))
        done = _read_done(scores_csv)
        done_paths = {p for p, f in done if f is None}
        todo = [p for p in items if is_video(p) or str(p) not in done_paths]
        need_emb = strategy in ("coreset", "hybrid")
        if need_emb and emb_file.exists():  # a kill between the two writes leaves extra embedding rows
            with open(emb_file, "r+b") as ef:
                ef.truncate(len(done) * model.backbone.out_channels * 2)
        if done:
            console.print(f"resuming: {len(done)} images / frames already scored in {scores_csv}")
        model.eval()
        pre = pre or model.preprocessor()
        new_file = not scores_csv.exists()
        with open(scores_csv, "a", newline="") as f, open(emb_file, "ab") as ef:
            w = csv.writer(f)
            if new_file:
                w.writerow(["path", "frame", "score"])
            with Phase(console, "scoring", count_frames(todo, vid_stride)) as bar:

                def skipped(source: str, message: str) -> None:
                    note(console, "skipped", message)
                    bar.advance(1)

                score = scorer or functools.partial(local_scores, model, pre, batch_size=batch_size,
                                                    vid_stride=vid_stride, workers=workers)
                for keys, s, emb, seen in score(todo, done, strategy, mc_passes, need_emb, skipped):
                    bar.advance(seen - len(keys))  # a resumed video's frames scored before
                    if not keys:
                        continue
                    if need_emb:
                        ef.write(emb.astype(np.float16).tobytes())
                        ef.flush()
                    w.writerows([[src, "" if fr is None else fr, f"{float(v):.6g}"] for (src, fr), v in zip(keys, s)])
                    f.flush()
                    bar.advance(len(keys))
        keys, scores, emb = scored(out_dir, [str(p) for p in items], model.backbone.out_channels if need_emb else 0)
        if shard is not None:
            write_record(out_dir, shard, positions, {"budget": budget, "strategy": strategy, "k": k, "seed": seed,
                                                     "min_gap": min_gap, "vid_stride": vid_stride,
                                                     "task": model.task, "labels": list(model.labels)})
            console.print(f"scored shard {shard[0]}/{shard[1]}: {len(keys)} images / frames in {scores_csv}; pick "
                          f"with `cvapps select --merge` over all {shard[1]} shard folders", highlight=False)
            return []
        sel = choose(keys, scores, emb, strategy, budget, k, seed, min_gap, console)
        save_frames(sel, out_dir / "frames")
        _write(sel, out_dir, copy_to, model, link, pre)
        if to is not None:
            files = write_picks(model, sel, to[0], to[1], pre, document_root, model_version, ls_config)
            console.print(f"{len(sel)} picks with the model's predictions as pre-annotations: "
                          f"{', '.join(map(str, files))}", highlight=False)
        if pseudo_label is not None:  # the rest of the pool: its images, and the videos' other sampled frames as images
            chosen = {(r["source"], r["frame"]) for r in sel}
            rest = [{"source": src, "frame": fr} for src, fr in keys if fr is not None and (src, fr) not in chosen]
            save_frames(rest, out_dir / "pseudo_frames")
            paths = [p for p in items if is_image(p) and (str(p), None) not in chosen] + [Path(r["path"]) for r in rest]
            info = write_pseudo_labels(model, paths, pseudo_label, out_dir, batch_size, pre)
            console.print(f"pseudo-labels for {info['written']} images and video frames (confidence >= {pseudo_label}) "
                          f"in {info['file']}, image names relative to {info['images']} (train on them with --images "
                          f"{info['images']})" + (f"; the frames in {out_dir / 'pseudo_frames'}" if rest else ""))
        return sel


@torch.inference_mode()
def score_frames(model, pre, frames: list, strategy: str, mc_passes: int, need_emb: bool) -> tuple:
    """(N,) scores and (need_emb) (N, D) float32 embeddings of prepared frames."""
    # counts: crops per image
    x, counts = to_batch(pre, [fr.payload[0] for fr in frames], model.device, memory_format(model))
    metas = [fr.payload[1] for fr in frames]
    s = per_image(_scores(model, x, metas, strategy, mc_passes), counts) if len(x) else torch.zeros(len(frames))
    if getattr(model, "finds_instances", False):  # a face detector: as predict sees the image
        s = s * _has_instances(model, pre, frames)
    emb = None
    if need_emb:
        crops = model.embed(x).cpu() if len(x) else torch.zeros(0, model.backbone.out_channels)
        emb = per_image(crops, counts, "mean").float().numpy()
    return s, emb


def local_scores(model, pre, todo: list, done, strategy: str, mc_passes: int, need_emb: bool, skipped, *,
                 batch_size: int, vid_stride: int, workers: int | None, frames=None):
    """Score ``todo`` in this process: per batch (keys, scores, embeddings or None, frames
    seen); frames already in ``done`` are not scored again; ``skipped(source, message)``
    hears of each unreadable one. ``frames``: frames read elsewhere, in place of ``todo``'s."""
    for batch in frame_batches(todo, pre, batch_size, vid_stride, threads=workers, frames=frames,
                               on_error=lambda fr: skipped(fr.source, fr.error.one_line()),
                               torch_threads=prepare_threads(model)):
        good = [fr for fr in batch if (fr.source, fr.frame) not in done]  # a resumed video's scored frames
        if not good:
            yield [], None, None, len(batch)
            continue
        s, emb = score_frames(model, pre, good, strategy, mc_passes, need_emb)
        yield [(fr.source, fr.frame) for fr in good], s, emb, len(batch)


def scored(out_dir: Path, wanted: list[str] | None, dim: int) -> tuple[list[Key], torch.Tensor, torch.Tensor | None]:
    """The (path, frame) keys of ``out_dir``/scores.csv (those of the ``wanted`` paths, in
    their order, then by frame — however the scoring processes finished; None: all, in file
    order), their scores and (``dim`` > 0) their embeddings."""
    done = _read_done(out_dir / "scores.csv")
    all_keys = list(done)
    if wanted is None:
        keep = list(range(len(all_keys)))
    else:
        pos = {p: j for j, p in reversed(list(enumerate(wanted)))}
        keep = sorted((i for i, key in enumerate(all_keys) if key[0] in pos),
                      key=lambda i: (pos[all_keys[i][0]], -1 if all_keys[i][1] is None else all_keys[i][1]))
    keys = [all_keys[i] for i in keep]
    scores = torch.tensor([done[key] for key in keys])
    emb = None
    if dim:  # embedding rows follow scores.csv rows; kept float16 (the strategies compute in float32 chunks)
        rows = np.memmap(out_dir / "embeddings.f16", np.float16, "r").reshape(-1, dim)
        emb = torch.from_numpy(rows[keep] if keep != list(range(len(rows))) else np.array(rows))
    return keys, scores, emb


def choose(keys: list[Key], scores: torch.Tensor, emb, strategy: str, budget: int, k: int, seed: int, min_gap: int,
           console) -> list[dict]:
    """The selection rows of the scored ``keys`` (rank order)."""
    local, shown = _pick(strategy, keys, scores, emb, budget, k, seed, min_gap)
    if budget > len(keys) == len(local):
        note(console, "note", f"--budget {budget} is more than the pool's {len(keys)} candidates: all of them "
                              "are selected, ranked")
    elif len(local) < min(budget, len(keys)):
        note(console, "note", f"selected {len(local)} of the {budget} asked: frames closer than --min-gap {min_gap} "
                              "to a pick are not picked, and no other candidate is left")
    return [{"path": keys[i][0], "source": keys[i][0], "frame": keys[i][1],
             "score": shown.get(i, float(scores[i])) if strategy != "random" else None, "rank": r + 1,
             "strategy": strategy} for r, i in enumerate(local)]


def shard_items(items: list[Path], shard: tuple[int, int]) -> tuple[list[Path], dict[str, int]]:
    """The i-th of N interleaved parts of ``items`` (every N-th, from i), and each one's
    position in the whole pool (a merge restores the pool's order from them)."""
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {i}/{n}: expected I/N with 0 <= I < N")
    mine = list(range(i, len(items), n))
    return [items[j] for j in mine], {str(items[j]): j for j in mine}


def write_record(out_dir: Path, shard: tuple[int, int], positions: dict[str, int], options: dict) -> None:
    (out_dir / "shard.json").write_text(json.dumps({"shard": shard[0], "of": shard[1], "options": options,
                                                    "positions": positions}))


def save_frames(sel: list[dict], folder: Path) -> None:
    """Write the picked video frames as JPEG images (read in order: seeking is not frame-exact
    in every codec) and point their rows' ``path`` at them."""
    wanted: dict[str, dict[int, list[dict]]] = {}
    for row in sel:
        if row["frame"] is not None:
            wanted.setdefault(row["source"], {}).setdefault(row["frame"], []).append(row)
    for video, frames in wanted.items():
        folder.mkdir(parents=True, exist_ok=True)
        cap = cv2.VideoCapture(video)
        i, last = 0, max(frames)
        try:
            while i <= last:
                ok, bgr = cap.read()
                if not ok:
                    raise DataError(f"could not re-read frame {i} for writing", path=video)
                if i in frames:
                    target = folder / f"{Path(video).stem}_f{i:06d}.jpg"
                    cv2.imwrite(str(target), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
                    for row in frames[i]:
                        row["path"] = str(target)
                i += 1
        finally:
            cap.release()


def _write(sel: list[dict], out_dir: Path, copy_to: str | None, model=None, link: bool = False, pre=None) -> None:
    with open(out_dir / "selection.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["rank", "path", "source", "frame", "score", "strategy"])
        w.writeheader()
        w.writerows(sel)
    (out_dir / "selection.json").write_text(json.dumps(sel, indent=1))
    contact_sheet(sel, out_dir / "contact_sheet.png", model, pre)
    if copy_to:
        dest = Path(copy_to)
        dest.mkdir(parents=True, exist_ok=True)
        for row in sel:
            target = dest / f"{row['rank']:04d}_{Path(row['path']).name}"
            if is_remote_image(row["path"]):  # (object storage / URL: a local copy to label)
                target = dest / f"{row['rank']:04d}_{Path(urllib.parse.urlsplit(row['path']).path).name}"
                target.write_bytes(remote_bytes(row["path"]))
            elif link:
                target.unlink(missing_ok=True)  # a rerun replaces its own links
                target.symlink_to(Path(row["path"]).resolve())
            else:
                shutil.copy2(row["path"], target)


def contact_sheet(sel: list[dict], path: Path, model=None, pre=None, cols: int = 5, tile: int = 256,
                  limit: int = 60) -> None:
    """Grid of the selected images with rank and score under each, the model's predictions
    (with preprocessor ``pre``, default the model's) drawn on the tiles at tile resolution (so
    labels stay readable)."""
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
        img = load_input(row["path"], i)[0]
        s = tile / max(img.shape[:2])
        small = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                           interpolation=cv2.INTER_AREA)
        if model is not None:
            small = predict_inputs(model, [img], pre=pre)[0].resized(small.shape[1] / img.shape[1],
                                                                     small.shape[0] / img.shape[0]).draw(small)
        y, x = (i // cols) * (tile + band), (i % cols) * tile
        # on the tile's bottom edge, centred across: the caption sits right under the picture
        dy, dx = tile - small.shape[0], (tile - small.shape[1]) // 2
        sheet[y + dy : y + tile, x + dx : x + dx + small.shape[1]] = small
        score = "-" if row["score"] is None else f"{row['score']:.3g}"
        captions.append((f"#{row['rank']}  {score}", x + dx + 2, y + tile + 2, (255, 255, 255)))
    sheet = draw.labels(sheet, captions, cap, above=False)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
