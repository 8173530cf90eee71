"""Every command-line option, declared once; a help that starts with a config key (`index.k: ...`)
names the key the option overrides (config.option_overrides derives it from the option's name)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Config = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (see configs/).")]
Sets = Annotated[
    list[str] | None, typer.Option("--set", help="Override any config key: --set train.lr=1e-4 (repeatable).")
]
Split = Annotated[str, typer.Option(help="Split to use: train, test, val, eval (test or val), or all.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
Replace = Annotated[
    bool,
    typer.Option(
        "--replace", help="Rebuild over an index that has enrolments or forgotten images since its build (drops them)."
    ),
]
ModelDir = Annotated[Path, typer.Option(help="Model directory from train-embed.")]
IndexModel = Annotated[Path | None, typer.Option(help="Model directory (default: the index's own).")]
Index = Annotated[Path, typer.Option(help="Index directory.")]
NoLocal = Annotated[
    bool, typer.Option("--no-local", help="Skip the index's local matching for this run: the embedding alone.")
]

# demo-data
DemoOut = Annotated[Path, typer.Argument(help="Folder to write the demo set into.")]
Seed = Annotated[int, typer.Option(help="Random seed; the same seed gives the same images.")]

# train-embed
Data = Annotated[Path, typer.Option(help="Dataset folder (labels.csv, train.csv or class folders).")]
ModelOut = Annotated[Path, typer.Option(help="Model directory to write.")]
Epochs = Annotated[int | None, typer.Option(help="train.epochs")]
Backbone = Annotated[str | None, typer.Option(help="model.backbone: any timm model name")]
Weights = Annotated[Path | None, typer.Option(help="model.weights: local checkpoint for the backbone")]
Pretrained = Annotated[
    bool | None,
    typer.Option("--pretrained/--no-pretrained", help="model.pretrained: packaged ImageNet weights or random init"),
]
ImageSize = Annotated[int | None, typer.Option(help="model.image_size")]
EmbeddingDim = Annotated[int | None, typer.Option(help="model.embedding_dim (0: no head)")]
Lr = Annotated[float | None, typer.Option(help="train.lr (backbone)")]
Loss = Annotated[
    str | None,
    typer.Option(help="loss.name: arcface, subcenter_arcface, triplet, contrastive, or a mix: 'arcface+triplet:0.5'"),
]
Mode = Annotated[
    str | None,
    typer.Option(
        help="train.mode: finetune, frozen (cached backbone features, fast on CPU), or auto (finetune on CUDA)"
    ),
]
Device = Annotated[str | None, typer.Option(help="train.device: auto, cpu or cuda")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the killed run in --out from its last epoch.")]
Nproc = Annotated[
    int,
    typer.Option(
        min=1,
        help="Processes on this machine (DDP: one per GPU, or a share of the cores): runs this command "
        "under `torchrun --standalone --nproc_per_node N`; across machines call torchrun yourself.",
    ),
]

# embed
EmbedData = Annotated[Path, typer.Option(help="Gallery dataset folder.")]
EmbedOut = Annotated[Path, typer.Option(help="Embeddings folder to write, or the unfinished one to resume.")]
ChunkSize = Annotated[int, typer.Option(min=1, help="Images per chunk file (the unit a resume skips).")]
EmbedFlip = Annotated[
    bool, typer.Option("--flip-tta/--no-flip-tta", help="Average with the mirrored image (as index.flip_tta).")
]
BatchSize = Annotated[int, typer.Option(min=1, help="Images per forward pass.")]

# build-index
IndexOut = Annotated[Path, typer.Option(help="Index directory to write (or, with --compact, to compact).")]
BuildModel = Annotated[Path | None, typer.Option(help="Model directory from train-embed.")]
Gallery = Annotated[Path | None, typer.Option(help="Gallery dataset folder.")]
Backend = Annotated[str | None, typer.Option(help="index.backend: faiss (GPU when present) or annoy")]
IndexType = Annotated[
    str | None,
    typer.Option(
        help="index.index_type: auto (by size), any FAISS factory string (HNSW32, IVF1024,PQ64,RFlat) or annoy trees=N"
    ),
]
SearchParams = Annotated[
    str | None, typer.Option(help="index.search_params: auto, nprobe=32, efSearch=128, search_k=20000")
]
Threshold = Annotated[
    float | None,
    typer.Option(help="index.threshold: similarity below which the answer is unknown (default: calibrate)"),
]
Calibrate = Annotated[
    str | None,
    typer.Option(help="index.calibrate: the unknown threshold maximises map@5, gap or balanced, or meets far"),
]
TargetFar = Annotated[
    float | None, typer.Option(help="index.target_far: share of unknown queries allowed a known answer")
]
K = Annotated[int | None, typer.Option(help="index.k: neighbours that vote")]
Power = Annotated[float | None, typer.Option(help="index.power: vote weight = similarity ** power")]
FlipTta = Annotated[
    bool | None, typer.Option("--flip-tta/--no-flip-tta", help="index.flip_tta: average with the mirrored image")
]
UnknownLabel = Annotated[str | None, typer.Option(help="index.unknown_label, e.g. new_whale")]
Compact = Annotated[
    bool, typer.Option("--compact", help="Fold enrolments into the bulk index and drop forgotten images.")
]
Local = Annotated[
    str | None,
    typer.Option(
        help="local.method: sift (RootSIFT + LNBNN on the instance, fused with the embedding), aliked, disk or "
        "xfeat (learned features; --set local.glue=N re-matches N candidates with their learned matcher), "
        "sift+disk (both in one LNBNN) or none"
    ),
]
Embeddings = Annotated[
    Path | None,
    typer.Option(help="Build from a folder `kenning embed` wrote (no model, no images; streamed chunk by chunk)."),
]

# query
Images = Annotated[list[Path] | None, typer.Argument(help="Image file(s) to recognise.")]
Batch = Annotated[
    Path | None,
    typer.Option(help="Folder of images, or CSV with an image/Image/path/id column: write a submission."),
]
BatchFormat = Annotated[
    str, typer.Option("--format", help="Submission format for --batch: whale (Image,Id) or landmark (id,landmarks)")
]
SubmissionOut = Annotated[Path, typer.Option(help="Submission CSV to write with --batch.")]
QueryK = Annotated[int | None, typer.Option(help="Neighbours that vote (default: the index's).")]
QueryPower = Annotated[float | None, typer.Option(help="Vote weight = similarity ** power (default: the index's).")]
QuerySearch = Annotated[
    str | None, typer.Option(help="Search parameters for this run, e.g. nprobe=64 (default: the index's).")
]
Json = Annotated[
    bool, typer.Option("--json", help="Machine-readable output (with local matching: each answer's score parts).")
]
ReplaceOut = Annotated[
    bool, typer.Option("--replace", help="--batch: overwrite an existing --out file (never the query list).")
]

Viewpoint = Annotated[
    str | None,
    typer.Option(help="Viewpoint of the photos (left, right, front, fluke...; default: what the file names state)."),
]
Encounter = Annotated[
    bool, typer.Option("--encounter", help="The photos are one encounter (one animal, one time): one answer.")
]

Candidates = Annotated[
    int, typer.Option(min=1, max=100, help="Ranked identities listed per photo, for a person (k-NN: its --k voters).")
]
Group = Annotated[
    bool,
    typer.Option(
        "--group",
        help="With --batch: photos that match each other are answered together (index built with index.grouping).",
    ),
]
NewRate = Annotated[
    float | None,
    typer.Option(min=0.0, max=1.0, help="With --batch: answer this share of the batch unknown (its own threshold)."),
]

EnrollEncounter = Annotated[str | None, typer.Option(help="Encounter id of the photos (one animal, one time).")]

# enroll, forget
EnrollImages = Annotated[list[Path], typer.Argument(help="One or a few photos of the new identity.")]
EnrollIndex = Annotated[Path, typer.Option(help="Index directory to add to.")]
Label = Annotated[str, typer.Option(help="Name of the identity.")]
ForgetLabels = Annotated[list[str] | None, typer.Option("--label", help="Identity to remove (repeatable).")]
ForgetIds = Annotated[list[str] | None, typer.Option("--id", help="Image id to remove (repeatable).")]
KeptPhotos = Annotated[
    Path | None,
    typer.Option(help="Folder where `serve` kept enrolled uploads (default: INDEX-photos beside the index)."),
]

# serve
ServeIndex = Annotated[Path, typer.Option(help="Index directory to serve.")]
Host = Annotated[str, typer.Option(help="Address to listen on (a non-loopback one needs --token).")]
Port = Annotated[int, typer.Option(help="Port to listen on (1-65535).")]
Token = Annotated[
    str | None, typer.Option(envvar="KENNING_TOKEN", help="Token that enrol and forget requests must bear.")
]
TokenRead = Annotated[
    bool, typer.Option("--token-read", help="Reads (identify, list, thumbnails, metrics) need the token too.")
]
AllowedHost = Annotated[
    list[str] | None,
    typer.Option(help="Another host name clients reach the service by (repeatable; '*': any). Others get 403."),
]
ServePhotos = Annotated[
    Path | None, typer.Option(help="Folder where enrolled uploads are kept (default: INDEX-photos beside it).")
]
MaxUploadMb = Annotated[float, typer.Option(help="Largest photo accepted, in MB (0-1024].")]
MaxRequestPixels = Annotated[int, typer.Option(help="Decoded pixels of all the photos of one request together.")]
CorsOrigin = Annotated[
    list[str] | None, typer.Option(help="Web origin allowed to call the API from a browser (repeatable; none).")
]

# eval
EvalData = Annotated[Path | None, typer.Option(help="Dataset folder with the query images.")]
EvalIndex = Annotated[Path | None, typer.Option(help="Index directory to score (no --protocol).")]
EvalModel = Annotated[
    Path | None, typer.Option(help="Model directory (--protocol: required; else default: the index's own).")
]
Protocol = Annotated[
    str | None,
    typer.Option(
        help="reid: leave-one-out on the split, closed set (protocol A); catalogue: enrol each known "
        "identity's first sighting, new identities must come out unknown (protocol B)"
    ),
]
ClosedSet = Annotated[bool, typer.Option(help="Leave out queries with no gallery match and never answer unknown.")]
Report = Annotated[
    Path | None, typer.Option(help="Folder for metrics.json, predictions.csv, report.html and its PNGs.")
]
KeptIndex = Annotated[
    Path | None, typer.Option(help="--protocol: keep the index it builds here (default: a temporary folder).")
]
Submission = Annotated[Path | None, typer.Option(help="A Kaggle submission CSV to score (with --solution).")]
Solution = Annotated[Path | None, typer.Option(help="The solution CSV the submission is scored against.")]
ScoreFormat = Annotated[str | None, typer.Option("--format", help="--submission: whale (MAP@5) or landmark (GAP)")]
ByEncounter = Annotated[
    bool, typer.Option("--by-encounter", help="Also score one answer per encounter (photos of one animal, one time).")
]
EvalNoLocal = Annotated[bool, typer.Option("--no-local", help="--index: score the embedding alone.")]
