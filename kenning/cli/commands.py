"""The commands: parse (options.py), one library call, print (output.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from kenning.cli import options as o
from kenning.cli import output
from kenning.cli.app import app, command_config
from kenning.config import option_overrides
from kenning.errors import KenningError, one_line
from kenning.paths import require_output_dir

TRAINING, INDEXING = ("train", "model", "loss"), ("index", "local")  # the config sections commands override


@app.command("demo-data")
def demo_data(out: o.DemoOut, seed: o.Seed = 0) -> None:
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
    data: o.Data,
    out: o.ModelOut,
    config: o.Config = None,
    split: o.Split = "train",
    epochs: o.Epochs = None,
    backbone: o.Backbone = None,
    weights: o.Weights = None,
    pretrained: o.Pretrained = None,
    image_size: o.ImageSize = None,
    embedding_dim: o.EmbeddingDim = None,
    lr: o.Lr = None,
    loss: o.Loss = None,
    mode: o.Mode = None,
    device: o.Device = None,
    resume: o.Resume = False,
    quiet: o.Quiet = False,
    nproc: o.Nproc = 1,
    sets: o.Sets = None,
) -> None:
    """Train a timm backbone + GeM + embedding head on P x K class-balanced batches (ArcFace family,
    triplet, contrastive, or a weighted mix); checkpoints every epoch, keeps the best on held-out identities.
    Under torchrun (or with --nproc) it trains with DistributedDataParallel."""
    from kenning.embeddings.distributed import launched_ranks
    from kenning.training.curves import CURVES
    from kenning.training.run import train_embedding, training_table

    flags = option_overrides(
        TRAINING, epochs=epochs, backbone=backbone, weights=weights, pretrained=pretrained, image_size=image_size,
        embedding_dim=embedding_dim, lr=lr, loss=loss, mode=mode, device=device,
    )  # fmt: skip
    cfg = command_config(config, sets, flags)
    table = training_table(cfg, data, split, out)  # checked here too: a bad dataset fails before N processes start
    if nproc > 1 and not launched_ranks().active:
        return _relaunch_under_torchrun(nproc, data, out, config, split, resume, quiet, sets, flags)
    result = train_embedding(cfg, table, out, progress=not quiet, resume=resume)
    if launched_ranks().is_main:
        output.training(result, out, CURVES)


def _relaunch_under_torchrun(
    nproc: int, data: Path, out: Path, config: Path | None, split: str, resume: bool, quiet: bool,
    sets: list[str] | None, flags: dict,
) -> None:  # fmt: skip
    """`train-embed --nproc N`: the same command, N processes, started by torchrun (which owns
    rendezvous, restarts and teardown); the options travel as the --set assignments they stand for."""
    import json
    import subprocess
    import sys

    args = ["train-embed", "--data", str(data), "--out", str(out), "--split", split]
    args += ["--config", str(config)] if config else []
    args += ["--resume"] * resume + ["--quiet"] * quiet
    for assignment in [*(sets or []), *(f"{key}={json.dumps(value)}" for key, value in flags.items())]:
        args += ["--set", assignment]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    done = subprocess.run([*launcher, "-m", "kenning", *args], check=False)
    if done.returncode:
        raise KenningError(f"distributed training over {nproc} processes failed (exit {done.returncode}); see above")


@app.command()
def embed(
    model: o.ModelDir,
    data: o.EmbedData,
    out: o.EmbedOut,
    split: o.Split = "all",
    chunk_size: o.ChunkSize = 4096,
    flip_tta: o.EmbedFlip = False,
    batch_size: o.BatchSize = 32,
    quiet: o.Quiet = False,
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
    out: o.IndexOut,
    model: o.BuildModel = None,
    data: o.Gallery = None,
    config: o.Config = None,
    split: o.Split = "all",
    backend: o.Backend = None,
    index_type: o.IndexType = None,
    search_params: o.SearchParams = None,
    threshold: o.Threshold = None,
    calibrate: o.Calibrate = None,
    target_far: o.TargetFar = None,
    k: o.K = None,
    power: o.Power = None,
    flip_tta: o.FlipTta = None,
    unknown_label: o.UnknownLabel = None,
    compact: o.Compact = False,
    local: o.Local = None,
    embeddings: o.Embeddings = None,
    replace: o.Replace = False,
    sets: o.Sets = None,
) -> None:
    """Embed a gallery into a FAISS or Annoy index with labels beside it (and its local features with
    --local sift), fit the fusion of the two stages and calibrate the unknown threshold."""
    if compact:
        from kenning.index.store import compact as compact_index

        index = compact_index(out, progress=True)
        return typer.echo(f"compacted {out}: {len(index)} images in one {index.manifest.index_type} index")
    from kenning.build import build_from

    flags = option_overrides(
        INDEXING, threshold=threshold, calibrate=calibrate, target_far=target_far, k=k, power=power,
        flip_tta=flip_tta, unknown_label=unknown_label, backend=backend, index_type=index_type,
        search_params=search_params, local=local,
    )  # fmt: skip
    cfg = command_config(config, sets, flags)
    index, calibration = build_from(out, cfg, model, data, embeddings, split, replace)
    output.built(index, calibration, out)


@app.command()
def query(
    index: o.Index,
    images: o.Images = None,
    model: o.IndexModel = None,
    batch: o.Batch = None,
    fmt: o.BatchFormat = "whale",
    out: o.SubmissionOut = Path("submission.csv"),
    k: o.QueryK = None,
    power: o.QueryPower = None,
    search_params: o.QuerySearch = None,
    no_local: o.NoLocal = False,
    as_json: o.Json = False,
    replace: o.ReplaceOut = False,
    viewpoint: o.Viewpoint = None,
    encounter: o.Encounter = False,
    candidates: o.Candidates = 5,
    new_rate: o.NewRate = None,
    group: o.Group = False,
) -> None:
    """Top-5 labels per image (or, with --encounter, for all of them at once) by k-nearest-neighbour
    voting, fused with local matching when the index has it; unknown when too far."""
    from kenning.answers import answer_images
    from kenning.eval.submission import answer_batch, check_submission_out
    from kenning.recognizer import Recognizer

    if bool(images) == (batch is not None) or (group and batch is None):
        raise KenningError("give image files or --batch DIR_OR_CSV, not both or neither (--group answers a --batch)")
    if batch is not None:
        check_submission_out(out, batch, replace, fmt)
    recognizer = Recognizer.open(index, model, progress=batch is not None)
    recognizer.configure(k=k, power=power, search_params=search_params, local=False if no_local else None)
    if batch is not None:
        rows, failed, groups = answer_batch(recognizer, batch, fmt, out, new_rate, group)
        output.batch(out, fmt, rows, failed, groups)
    else:
        records = answer_images(recognizer, [str(p) for p in images], viewpoint, encounter, candidates)
        output.answers(records, as_json)
        failed = [r for r in records + records[0].get("photos", []) if "error" in r]
    if failed:
        raise typer.Exit(2)


@app.command()
def enroll(
    images: o.EnrollImages,
    index: o.EnrollIndex,
    label: o.Label,
    model: o.IndexModel = None,
    viewpoint: o.Viewpoint = None,
    encounter: o.EnrollEncounter = None,
) -> None:
    """Add an identity from one or a few photos (one commit), without retraining or rebuilding; it is
    queryable at once."""
    from kenning.enrolment import enroll_images

    metadata = {"viewpoint": (viewpoint or "").strip().lower(), "encounter": (encounter or "").strip()}
    result = enroll_images(index, [str(p) for p in images], label, model, metadata=metadata)
    for path, image_id in result.already:
        typer.echo(f"notice: {one_line(path)} is already enrolled as {label!r} (image id {image_id!r})")
    ids = f" (image ids: {', '.join(result.added)})" if result.added else ""
    typer.echo(
        f"enrolled {len(result.added)} of {len(images)} image(s) as {label!r}{one_line(ids)}; "
        f"the index now holds {result.total} images"
    )
    output.errors(result.errors, "not enrolled: ")
    if result.errors:
        raise typer.Exit(2)


@app.command()
def forget(
    index: o.Index, label: o.ForgetLabels = None, image_id: o.ForgetIds = None, photos: o.KeptPhotos = None
) -> None:
    """Remove identities or single images from an index; queries stop returning them at once. Each
    --label and --id must be in the index (a typo removes nothing). The photos `serve` kept for them
    are deleted too, unless another image still uses them."""
    from kenning.index.store import forget as forget_images
    from kenning.photos import default_photos_dir

    if not label and not image_id:
        raise KenningError("forget needs --label NAME or --id IMAGE_ID")
    photos = photos or default_photos_dir(index)
    done = forget_images(index, label or [], image_id or [], photos)
    kept = f"; deleted {len(done.photos_deleted)} kept photo(s) from {photos}" if done.photos_deleted else ""
    typer.echo(f"removed {done.count} image(s){one_line(kept)}; the index now holds {done.remaining} images")


@app.command()
def serve(
    index: o.ServeIndex,
    host: o.Host = "127.0.0.1",
    port: o.Port = 8000,
    token: o.Token = None,
    token_read: o.TokenRead = False,
    allowed_host: o.AllowedHost = None,
    photos: o.ServePhotos = None,
    model: o.IndexModel = None,
    max_upload_mb: o.MaxUploadMb = 20.0,
    max_request_pixels: o.MaxRequestPixels = 150_000_000,
    cors_origin: o.CorsOrigin = None,
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
    if settings.notice:
        typer.echo(f"notice: {settings.notice}", err=True)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {index} ({served.health()['images']} images) at http://{shown}:{port}/  (API: /docs)")
    uvicorn.run(create_app(served, settings), host=host, port=port, log_level="warning")


@app.command("eval")
def eval_cmd(
    data: o.EvalData = None,
    index: o.EvalIndex = None,
    model: o.EvalModel = None,
    protocol: o.Protocol = None,
    split: o.Split = "eval",
    closed_set: o.ClosedSet = False,
    report: o.Report = None,
    index_out: o.KeptIndex = None,
    submission: o.Submission = None,
    solution: o.Solution = None,
    fmt: o.ScoreFormat = None,
    config: o.Config = None,
    calibrate: o.Calibrate = None,
    target_far: o.TargetFar = None,
    local: o.Local = None,
    no_local: o.EvalNoLocal = False,
    by_encounter: o.ByEncounter = False,
    sets: o.Sets = None,
) -> None:
    """Score a system (an index, or a model under --protocol) or a Kaggle submission file: Recall@1/5,
    precision@1, R-precision, mAP@R, MAP@5 (Kaggle Humpback), GAP (Kaggle Landmark), accuracy on known
    and unknown queries, AUROC of the match similarity, the false-accept rate at the index's threshold."""
    from kenning.eval.evaluate import format_metrics
    from kenning.eval.kaggle_files import score_file_options
    from kenning.eval.report import check_report_dir, write_report
    from kenning.eval.runs import run_eval

    if submission is not None or solution is not None:
        return output.scores(score_file_options(submission, solution, fmt))
    if data is None:
        raise KenningError("eval needs --data (or --submission and --solution)")
    check_report_dir(report)
    flags = option_overrides(INDEXING, calibrate=calibrate, target_far=target_far, local=local)
    cfg = command_config(config, sets, flags)
    result, title = run_eval(data, cfg, split, index, model, protocol, closed_set, index_out, no_local, by_encounter)
    typer.echo(format_metrics(result.metrics))
    if report is not None:
        page = write_report(result, report, title)
        typer.echo(f"wrote {report / 'metrics.json'}, {report / 'predictions.csv'} and {page}")
