"""Kenning's command line: parse, call, print. Errors in the user's input exit with code 2, in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from kenning.config import Config, load_config, parse_assignment
from kenning.errors import KenningError, one_line
from kenning.paths import require_output_dir, require_output_file


class _OneLineErrors(TyperGroup):
    """Kenning's own errors, and the operating system's (disk full, permission denied), end a command
    as one line on stderr and exit code 2, never a traceback; in-process callers (tests) see the same."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KenningError as exc:
            message = str(exc)
        except OSError as exc:
            message = os_error_line(exc)
        typer.echo(f"error: {one_line(message)}", err=True)
        raise typer.Exit(2)


def os_error_line(exc: OSError) -> str:
    """The operating system's words and the file (disk full: path); a library's OSError keeps its message."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror}{where}" if exc.strerror else f"{type(exc).__name__}: {exc or 'no details'}"


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Recognise instances (a landmark, one particular whale) from photos, or say they are new.",
)


@app.callback()
def _options(
    max_pixels: Annotated[
        int,
        typer.Option(
            envvar="KENNING_MAX_PIXELS",
            help="Largest image (width x height) any command decodes; larger ones are refused (decompression bombs).",
        ),
    ] = 89_478_485,
) -> None:
    from kenning.data.images import set_max_pixels

    set_max_pixels(max_pixels)


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (see configs/).")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override any config key: --set train.lr=1e-4 (repeatable).")
]
CalibrateOpt = Annotated[
    str | None,
    typer.Option(help="index.calibrate: the unknown threshold maximises map@5 or gap, or meets far (--target-far)"),
]
TargetFarOpt = Annotated[
    float | None, typer.Option(help="index.target_far: share of unknown queries allowed a known answer")
]
SplitOpt = Annotated[str, typer.Option(help="Split to use: train, test, val, eval (test or val), or all.")]
LocalOpt = Annotated[
    str | None,
    typer.Option(help="local.method: sift (RootSIFT + LNBNN on the instance, fused with the embedding) or none"),
]


def _config(path: Path | None, sets: list[str] | None, flags: dict[str, Any]) -> Config:
    overrides = dict(parse_assignment(s) for s in sets or [])
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return load_config(path, overrides)


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder to write the demo set into.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same images.")] = 0,
) -> None:
    """Write the built-in demo set: drawn landmarks in many views, distractors, and enroll/ photos."""
    from kenning.data.demo import DemoSpec, is_demo_dir, write_demo_set

    require_output_dir(out, "demo folder", is_demo_dir)
    table = write_demo_set(out, DemoSpec(seed=seed))
    by_split = table.groupby("split")["label"].agg(["size", lambda s: s[s != ""].nunique()])
    for split, (images, identities) in by_split.iterrows():
        typer.echo(f"{split}: {images} images, {identities} identities")
    typer.echo(f"wrote {out / 'labels.csv'}; a new landmark to enroll is in {out / 'enroll'}")


@app.command("train-embed")
def train_embed(
    data: Annotated[Path, typer.Option(help="Dataset folder (labels.csv, train.csv or class folders).")],
    out: Annotated[Path, typer.Option(help="Model directory to write.")],
    config: ConfigOpt = None,
    split: SplitOpt = "train",
    epochs: Annotated[int | None, typer.Option(help="train.epochs")] = None,
    backbone: Annotated[str | None, typer.Option(help="model.backbone: any timm model name")] = None,
    weights: Annotated[Path | None, typer.Option(help="model.weights: local checkpoint for the backbone")] = None,
    pretrained: Annotated[
        bool | None,
        typer.Option("--pretrained/--no-pretrained", help="model.pretrained: packaged ImageNet weights or random init"),
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="model.image_size")] = None,
    embedding_dim: Annotated[int | None, typer.Option(help="model.embedding_dim (0: no head)")] = None,
    lr: Annotated[float | None, typer.Option(help="train.lr (backbone)")] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            help="loss.name: arcface, subcenter_arcface, triplet, contrastive, or a mix: 'arcface+triplet:0.5'"
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="train.mode: finetune, frozen (cached backbone features, fast on CPU), or auto (finetune on CUDA)"
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="train.device: auto, cpu or cuda")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the killed run in --out from its last epoch.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes on this machine (DDP: one per GPU, or a share of the cores): runs this command "
            "under `torchrun --standalone --nproc_per_node N`; across machines call torchrun yourself.",
        ),
    ] = 1,
    sets: SetOpt = None,
) -> None:
    """Train a timm backbone + GeM + embedding head on P x K class-balanced batches (ArcFace family,
    triplet, contrastive, or a weighted mix); checkpoints every epoch, keeps the best on held-out identities.
    Under torchrun (or with --nproc) it trains with DistributedDataParallel."""
    from kenning.data.readers import read_dataset, select_split
    from kenning.embeddings.checkpoint import is_model_dir
    from kenning.embeddings.distributed import launched_ranks
    from kenning.embeddings.model import check_backbone
    from kenning.training.curves import CURVES
    from kenning.training.run import train_embedding

    require_output_dir(out, "model folder", is_model_dir)
    flags = {
        "train.epochs": epochs,
        "model.backbone": backbone,
        "model.weights": str(weights) if weights else None,
        "model.pretrained": pretrained,
        "model.image_size": image_size,
        "model.embedding_dim": embedding_dim,
        "train.lr": lr,
        "train.device": device,
        "loss.name": loss,
        "train.mode": mode,
    }
    cfg = _config(config, sets, flags)
    check_backbone(cfg.model.backbone)  # a hub name would download: refused before any folder is made
    table = select_split(read_dataset(data), split)  # read here too: a bad dataset fails before N processes start
    if nproc > 1 and not launched_ranks().active:
        _relaunch_under_torchrun(nproc, data, out, config, split, resume, quiet, sets, flags)
        return
    result = train_embedding(cfg, table, out, progress=not quiet, resume=resume)
    if not launched_ranks().is_main:
        return
    losses = ", ".join(f"{v:.3f}" for v in result.epoch_losses) or "none (0 epochs)"
    typer.echo(
        f"trained on {result.train_images} images of {len(result.manifest.classes)} identities "
        f"({result.holdout_images} held out for validation and calibration) in {result.seconds:.0f}s; "
        f"loss per epoch: {losses}"
    )
    if result.validation:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.validation.items())
        typer.echo(f"best epoch {result.best_epoch} on held-out identities: {shown}")
    curves = f" (training curves: {out / CURVES})" if result.history else ""
    typer.echo(f"model {result.manifest.fingerprint} saved to {out}{curves}")


def _relaunch_under_torchrun(
    nproc: int,
    data: Path,
    out: Path,
    config: Path | None,
    split: str,
    resume: bool,
    quiet: bool,
    sets: list[str] | None,
    flags: dict[str, Any],
) -> None:
    """`train-embed --nproc N`: the same command, N processes, started by torchrun (which owns
    rendezvous, restarts and teardown); the options travel as --set assignments."""
    import subprocess
    import sys

    args = ["train-embed", "--data", str(data), "--out", str(out), "--split", split]
    args += ["--config", str(config)] if config else []
    args += ["--resume"] * resume + ["--quiet"] * quiet
    for assignment in sets or []:
        args += ["--set", assignment]
    for key, value in flags.items():
        if value is not None:
            args += ["--set", f"{key}={json.dumps(value)}"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    done = subprocess.run([*launcher, "-m", "kenning", *args], check=False)
    if done.returncode:
        raise KenningError(f"distributed training over {nproc} processes failed (exit {done.returncode}); see above")


@app.command()
def embed(
    model: Annotated[Path, typer.Option(help="Model directory from train-embed.")],
    data: Annotated[Path, typer.Option(help="Gallery dataset folder.")],
    out: Annotated[Path, typer.Option(help="Embeddings folder to write, or the unfinished one to resume.")],
    split: SplitOpt = "all",
    chunk_size: Annotated[int, typer.Option(min=1, help="Images per chunk file (the unit a resume skips).")] = 4096,
    flip_tta: Annotated[
        bool, typer.Option("--flip-tta/--no-flip-tta", help="Average with the mirrored image (as index.flip_tta).")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Embed a gallery (and the model's held-out images, for calibration) into Parquet chunks that a
    killed run resumes from; under torchrun each process embeds its own chunks. Then
    `build-index --embeddings OUT` indexes them without the model."""
    from kenning.data.readers import read_dataset, select_split
    from kenning.embeddings.distributed import launched_ranks
    from kenning.embeddings.shards import embed_to_dir, is_embeddings_dir

    require_output_dir(out, "embeddings folder", is_embeddings_dir)
    gallery = select_split(read_dataset(data), split)
    manifest = embed_to_dir(model, gallery, out, flip_tta, chunk_size, batch_size, progress=not quiet)
    if launched_ranks().is_main:
        typer.echo(f"embedded {manifest.rows} images in {manifest.chunks} chunks into {out}")


@app.command("build-index")
def build_index_cmd(
    out: Annotated[Path, typer.Option(help="Index directory to write (or, with --compact, to compact).")],
    model: Annotated[Path | None, typer.Option(help="Model directory from train-embed.")] = None,
    data: Annotated[Path | None, typer.Option(help="Gallery dataset folder.")] = None,
    config: ConfigOpt = None,
    split: SplitOpt = "all",
    backend: Annotated[str | None, typer.Option(help="index.backend: faiss (GPU when present) or annoy")] = None,
    index_type: Annotated[
        str | None,
        typer.Option(
            help="index.index_type: auto (by size), any FAISS factory string (HNSW32, IVF1024,PQ64,RFlat) "
            "or annoy trees=N"
        ),
    ] = None,
    search_params: Annotated[
        str | None, typer.Option(help="index.search_params: auto, nprobe=32, efSearch=128, search_k=20000")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="index.threshold: similarity below which the answer is unknown (default: calibrate)"),
    ] = None,
    calibrate: CalibrateOpt = None,
    target_far: TargetFarOpt = None,
    k: Annotated[int | None, typer.Option(help="index.k: neighbours that vote")] = None,
    power: Annotated[float | None, typer.Option(help="index.power: vote weight = similarity ** power")] = None,
    flip_tta: Annotated[
        bool | None, typer.Option("--flip-tta/--no-flip-tta", help="index.flip_tta: average with the mirrored image")
    ] = None,
    unknown_label: Annotated[str | None, typer.Option(help="index.unknown_label, e.g. new_whale")] = None,
    compact: Annotated[
        bool, typer.Option("--compact", help="Fold enrolments into the bulk index and drop forgotten images.")
    ] = False,
    local: LocalOpt = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(help="Build from a folder `kenning embed` wrote (no model, no images; streamed chunk by chunk)."),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Rebuild over an index that has enrolments or forgotten images since its build (drops them).",
        ),
    ] = False,
    sets: SetOpt = None,
) -> None:
    """Embed a gallery into a FAISS or Annoy index with labels beside it (and its local features with
    --local sift), fit the fusion of the two stages and calibrate the unknown threshold."""
    if compact:
        from kenning.index.store import compact as compact_index

        index = compact_index(out, progress=True)
        typer.echo(f"compacted {out}: {len(index)} images in one {index.manifest.index_type} index")
        return
    if embeddings is not None and (model is not None or data is not None):
        raise KenningError("--embeddings holds the model's vectors of the gallery: drop --model and --data")
    if embeddings is None and (model is None or data is None):
        raise KenningError(
            "build-index needs --model and --data, or --embeddings (or --compact with an existing --out)"
        )
    from kenning.build import build_index, build_index_from_embeddings
    from kenning.data.readers import read_dataset, select_split

    cfg = _config(
        config,
        sets,
        {
            "index.threshold": threshold,
            "index.calibrate": calibrate,
            "index.target_far": target_far,
            "index.k": k,
            "index.power": power,
            "index.flip_tta": flip_tta,
            "index.unknown_label": unknown_label,
            "index.backend": backend,
            "index.index_type": index_type,
            "index.search_params": search_params,
            "local.method": local,
        },
    )
    if embeddings is not None:
        if cfg.local.method != "none":
            raise KenningError("local features need the images: build from --model and --data with --local sift")
        index, calibration = build_index_from_embeddings(embeddings, cfg.index, out, replace=replace)
    else:
        gallery = select_split(read_dataset(data), split)
        index, calibration = build_index(model, gallery, cfg.index, out, local=cfg.local, replace=replace)
    m = index.manifest
    params = f", {m.search_params}" if m.search_params else ""
    typer.echo(
        f"indexed {len(index)} images of {index.table['label'].nunique()} identities into {out} "
        f"({m.backend} {m.index_type}{params})"
    )
    if m.operating_point:
        point = m.operating_point
        typer.echo(
            f"search settings {point['search_params']}: recall@{point['k']} {point['recall']:.3f} against exact "
            f"search on {point['queries']} gallery vectors (target {point['target']}), {point['qps']:.0f} queries/s"
        )
    if calibration is not None:
        typer.echo(f"unknown threshold {calibration.threshold:.4f} ({calibration.describe()})")
    elif m.threshold is not None:
        typer.echo(f"unknown threshold {m.threshold:.4f} (given)")
    else:
        typer.echo(
            "warning: the model has no held-out identities to calibrate on, so unknown is never "
            "answered; pass --threshold to choose one",
            err=True,
        )


@app.command()
def query(
    index: Annotated[Path, typer.Option(help="Index directory.")],
    images: Annotated[list[Path] | None, typer.Argument(help="Image file(s) to recognise.")] = None,
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the index's own).")] = None,
    batch: Annotated[
        Path | None,
        typer.Option(help="Folder of images, or CSV with an image/Image/path/id column: write a submission."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="Submission format for --batch: whale (Image,Id) or landmark (id,landmarks)")
    ] = "whale",
    out: Annotated[Path, typer.Option(help="Submission CSV to write with --batch.")] = Path("submission.csv"),
    k: Annotated[int | None, typer.Option(help="Neighbours that vote (default: the index's).")] = None,
    power: Annotated[
        float | None, typer.Option(help="Vote weight = similarity ** power (default: the index's).")
    ] = None,
    search_params: Annotated[
        str | None, typer.Option(help="Search parameters for this run, e.g. nprobe=64 (default: the index's).")
    ] = None,
    no_local: Annotated[
        bool, typer.Option("--no-local", help="Skip the index's local matching for this run: the embedding alone.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable output (with local matching: each answer's score parts).")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="--batch: overwrite an existing --out file (never the query list).")
    ] = False,
) -> None:
    """Top-5 labels per image by k-nearest-neighbour voting (fused with local matching when the index
    has it), with confidences; unknown when too far."""
    from kenning.recognizer import Recognizer

    if bool(images) == (batch is not None):
        raise KenningError("give image files or --batch DIR_OR_CSV, not both or neither")
    if fmt not in ("whale", "landmark"):
        raise KenningError(f"--format must be whale or landmark, not {fmt!r}")
    if batch is not None:
        _check_submission_out(out, batch, replace)
    recognizer = Recognizer.open(index, model, progress=batch is not None)
    recognizer.configure(k=k, power=power, search_params=search_params, local=False if no_local else None)
    if batch is not None:
        from kenning.data.readers import read_query_list
        from kenning.eval.submission import submission_keys, write_submission
        from kenning.labels import check_kaggle_labels

        check_kaggle_labels([*recognizer.index.label_counts().index, recognizer.unknown_label], fmt)
        listing = read_query_list(batch)
        submission_keys(fmt, listing["name"].tolist())  # x.jpg and x.png: refused before any image is read
        answers = recognizer.query(listing["path"].tolist())
        failed = write_submission(out, fmt, listing["name"].tolist(), answers, recognizer.unknown_label)
        for line in failed:
            typer.echo(f"error: {one_line(line)}", err=True)
        typer.echo(f"wrote {out}: {len(listing)} rows ({fmt} format), {len(failed)} unreadable")
        if failed:
            raise typer.Exit(2)
        return
    answers = recognizer.query([str(p) for p in images])
    threshold = recognizer.threshold
    score = "fused probability" if recognizer.use_local else "similarity"
    failed = 0
    results = []
    for path, answer in zip(images, answers, strict=True):
        if isinstance(answer, str):
            failed += 1
            results.append({"image": str(path), "error": answer})
            continue
        results.append(
            {
                "image": str(path),
                "predictions": [
                    {
                        "label": lab,
                        "confidence": None if c is None else round(c, 4),
                        **({"scores": parts} if parts else {}),
                    }
                    for lab, c, parts in zip(
                        answer.labels, answer.confidences, answer.parts or [None] * len(answer.labels), strict=True
                    )
                ],
                "best_similarity": round(answer.best_similarity, 4),
                "score": score,
                "threshold": threshold,
            }
        )
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                typer.echo(f"error: {one_line(r['error'])}", err=True)
                continue
            typer.echo(f"{one_line(r['image'])}  (best match {score} {r['best_similarity']:.3f})")
            for rank, p in enumerate(r["predictions"], start=1):
                if p["confidence"] is None:  # the unknown answer: placed by the threshold, not voted
                    typer.echo(f"  {rank}. {p['label']:<30} (labels below come from matches under {threshold:.3f})")
                else:
                    typer.echo(f"  {rank}. {p['label']:<30} {p['confidence']:.3f}")
    if failed:
        raise typer.Exit(2)


def _check_submission_out(out: Path, batch: Path, replace: bool) -> None:
    """A submission never overwrites its own query list, nor any existing file unless asked to."""
    import os

    from kenning.paths import path_kind

    require_output_file(out, "submission")
    if path_kind(out) is None:
        return
    if path_kind(batch) == "a regular file" and os.path.samefile(out, batch):
        raise KenningError(f"--out {out} is the query list itself: write the submission elsewhere")
    if not replace:
        raise KenningError(
            f"{out} exists and Kenning cannot tell it is its own: choose another --out, or pass --replace"
        )


@app.command()
def enroll(
    images: Annotated[list[Path], typer.Argument(help="One or a few photos of the new identity.")],
    index: Annotated[Path, typer.Option(help="Index directory to add to.")],
    label: Annotated[str, typer.Option(help="Name of the identity.")],
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the index's own).")] = None,
) -> None:
    """Add an identity from one or a few photos, without retraining or rebuilding; it is queryable at once."""
    from kenning.enrolment import enroll_images

    result = enroll_images(index, [str(p) for p in images], label, model)
    for path, image_id in result.already:
        typer.echo(f"notice: {one_line(path)} is already enrolled as {label!r} (image id {image_id!r})")
    ids = f" (image ids: {', '.join(result.added)})" if result.added else ""
    typer.echo(
        f"enrolled {len(result.added)} of {len(images)} image(s) as {label!r}{one_line(ids)}; "
        f"the index now holds {result.total} images"
    )
    for line in result.errors:
        typer.echo(f"error: not enrolled: {one_line(line)}", err=True)
    if result.errors:
        raise typer.Exit(2)


@app.command()
def forget(
    index: Annotated[Path, typer.Option(help="Index directory.")],
    label: Annotated[list[str] | None, typer.Option(help="Identity to remove (repeatable).")] = None,
    image_id: Annotated[list[str] | None, typer.Option("--id", help="Image id to remove (repeatable).")] = None,
    photos: Annotated[
        Path | None,
        typer.Option(help="Folder where `serve` kept enrolled uploads (default: INDEX-photos beside the index)."),
    ] = None,
) -> None:
    """Remove identities or single images from an index; queries stop returning them at once. Each
    --label and --id must be in the index (a typo removes nothing). The photos `serve` kept for them
    are deleted too, unless another image still uses them."""
    from kenning.index.manifest import read_index_manifest
    from kenning.index.store import forget as forget_images
    from kenning.photos import default_photos_dir

    if not label and not image_id:
        raise KenningError("forget needs --label NAME or --id IMAGE_ID")
    photos = photos or default_photos_dir(index)
    done = forget_images(index, label or [], image_id or [], photos)
    kept = f"; deleted {len(done.photos_deleted)} kept photo(s) from {photos}" if done.photos_deleted else ""
    typer.echo(
        f"removed {done.count} image(s){one_line(kept)}; the index now holds {read_index_manifest(index).count} images"
    )


@app.command()
def serve(
    index: Annotated[Path, typer.Option(help="Index directory to serve.")],
    host: Annotated[str, typer.Option(help="Address to listen on (a non-loopback one needs --token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (1-65535).")] = 8000,
    token: Annotated[
        str | None, typer.Option(envvar="KENNING_TOKEN", help="Token that enrol and forget requests must bear.")
    ] = None,
    token_read: Annotated[
        bool,
        typer.Option("--token-read", help="Reads (identify, list, thumbnails, metrics) need the token too."),
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="Another host name clients reach the service by (repeatable; '*': any). Others get 403."),
    ] = None,
    photos: Annotated[
        Path | None, typer.Option(help="Folder where enrolled uploads are kept (default: INDEX-photos beside it).")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the index's own).")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest photo accepted, in MB (0-1024].")] = 20.0,
    max_request_pixels: Annotated[
        int, typer.Option(help="Decoded pixels of all the photos of one request together.")
    ] = 150_000_000,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Web origin allowed to call the API from a browser (repeatable; none).")
    ] = None,
) -> None:
    """An HTTP service and a browser page: identify photos, confirm, enrol, forget (model and index loaded once)."""
    import uvicorn

    from kenning.photos import default_photos_dir
    from kenning.serve.app import create_app
    from kenning.serve.catalogue import ServedIndex
    from kenning.serve.guard import serve_settings

    settings = serve_settings(
        host, port, token, max_upload_mb, cors_origin or [], token_read, allowed_host, max_request_pixels
    )
    served = ServedIndex(index, photos or default_photos_dir(index), model)
    if not token:
        typer.echo("notice: no --token: anyone on this machine can enrol and forget", err=True)
    elif not token_read:
        typer.echo(
            "notice: reads (identify, the list of labels, thumbnails) need no token; --token-read protects them",
            err=True,
        )
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {index} ({served.health()['images']} images) at http://{shown}:{port}/  (API: /docs)")
    uvicorn.run(create_app(served, settings), host=host, port=port, log_level="warning")


@app.command("eval")
def eval_cmd(
    data: Annotated[Path | None, typer.Option(help="Dataset folder with the query images.")] = None,
    index: Annotated[Path | None, typer.Option(help="Index directory to score (no --protocol).")] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model directory (--protocol: required; else default: the index's own).")
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="reid: leave-one-out on the split, closed set (protocol A); catalogue: enrol each known "
            "identity's first sighting, new identities must come out unknown (protocol B)"
        ),
    ] = None,
    split: SplitOpt = "eval",
    closed_set: Annotated[
        bool, typer.Option(help="Leave out queries with no gallery match and never answer unknown.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="Folder for metrics.json, predictions.csv, report.html and its PNGs.")
    ] = None,
    index_out: Annotated[
        Path | None, typer.Option(help="--protocol: keep the index it builds here (default: a temporary folder).")
    ] = None,
    submission: Annotated[Path | None, typer.Option(help="A Kaggle submission CSV to score (with --solution).")] = None,
    solution: Annotated[Path | None, typer.Option(help="The solution CSV the submission is scored against.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="--submission: whale (MAP@5) or landmark (GAP)")] = None,
    config: ConfigOpt = None,
    calibrate: CalibrateOpt = None,
    target_far: TargetFarOpt = None,
    local: LocalOpt = None,
    no_local: Annotated[bool, typer.Option("--no-local", help="--index: score the embedding alone.")] = False,
    sets: SetOpt = None,
) -> None:
    """Score a system (an index, or a model under --protocol) or a Kaggle submission file.

    Reports Recall@1/5, precision@1, R-precision, mAP@R, MAP@5 (Kaggle Humpback), GAP (Kaggle
    Landmark), accuracy on known and on unknown queries, AUROC of the match similarity and the
    false-accept rate at the index's threshold.
    """
    if submission is not None or solution is not None:
        if submission is None or solution is None or fmt is None:
            raise KenningError("scoring a file needs --submission, --solution and --format whale|landmark")
        from kenning.eval.kaggle_files import score_files

        scores = score_files(submission, solution, fmt)
        for key, value in scores.items():
            typer.echo(f"{key:<17} {value:.5f}" if isinstance(value, float) else f"{key:<17} {value}")
        return
    if data is None:
        raise KenningError("eval needs --data (or --submission and --solution)")
    if report is not None:
        from kenning.eval.report import is_report_dir

        require_output_dir(report, "report folder", is_report_dir)
    from kenning.data.readers import read_dataset, select_split
    from kenning.eval.evaluate import evaluate, format_metrics

    images = select_split(read_dataset(data), split)
    if protocol is not None:
        if model is None:
            raise KenningError("--protocol needs --model: it builds its own index from the split")
        if index is not None or closed_set:
            raise KenningError(
                "--protocol builds its own index and sets its own closed or open set: drop --index/--closed-set"
            )
        from kenning.eval.protocols import run_protocol

        cfg = _config(
            config, sets, {"index.calibrate": calibrate, "index.target_far": target_far, "local.method": local}
        )
        result = run_protocol(protocol, model, images, cfg.index, index_out, local=cfg.local)
        title = f"Kenning, protocol {protocol} on {data} ({split})"
    else:
        if index is None:
            raise KenningError("eval needs --index (or --protocol with --model)")
        from kenning.recognizer import Recognizer

        recognizer = Recognizer.open(index, model)
        recognizer.configure(local=False if no_local else None)
        result = evaluate(recognizer, images, closed_set=closed_set)
        title = f"Kenning, {index} on {data} ({split})"
    typer.echo(format_metrics(result.metrics))
    if report is not None:
        from kenning.eval.report import write_report

        page = write_report(result, report, title)
        typer.echo(f"wrote {report / 'metrics.json'}, {report / 'predictions.csv'} and {page}")


def main() -> None:
    """Typer handles usage errors (exit 2) and exit codes; `_OneLineErrors` Kenning's own."""
    app()
