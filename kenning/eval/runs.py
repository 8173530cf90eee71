"""`kenning eval` on a dataset: an index scored on a split, or a model under a protocol (which builds
its own index from the split)."""

from __future__ import annotations

from pathlib import Path

from kenning.config import Config
from kenning.data.readers import read_dataset, select_split
from kenning.errors import KenningError
from kenning.eval.encounters import encounter_metrics
from kenning.eval.evaluate import EvalResult, evaluate
from kenning.eval.protocols import run_protocol


def run_eval(
    data: Path,
    cfg: Config,
    split: str = "eval",
    index: Path | None = None,
    model: Path | None = None,
    protocol: str | None = None,
    closed_set: bool = False,
    index_out: Path | None = None,
    no_local: bool = False,
    by_encounter: bool = False,
) -> tuple[EvalResult, str]:
    """The result and a title for its report; `by_encounter` adds the figures of one answer per
    encounter (eval/encounters.py) to its metrics, as "encounter <figure>"."""
    result, title = _run(data, cfg, split, index, model, protocol, closed_set, index_out, no_local)
    if by_encounter:
        result.metrics.update({f"encounter {k}": v for k, v in encounter_metrics(result).items()})
    return result, title


def _run(
    data: Path,
    cfg: Config,
    split: str,
    index: Path | None,
    model: Path | None,
    protocol: str | None,
    closed_set: bool,
    index_out: Path | None,
    no_local: bool,
) -> tuple[EvalResult, str]:
    images = select_split(read_dataset(data), split)
    if protocol is not None:
        if model is None:
            raise KenningError("--protocol needs --model: it builds its own index from the split")
        if index is not None or closed_set:
            raise KenningError(
                "--protocol builds its own index and sets its own closed or open set: drop --index/--closed-set"
            )
        result = run_protocol(protocol, model, images, cfg.index, index_out, local=cfg.local)
        return result, f"Kenning, protocol {protocol} on {data} ({split})"
    if index is None:
        raise KenningError("eval needs --index (or --protocol with --model)")
    from kenning.recognizer import Recognizer

    recognizer = Recognizer.open(index, model)
    recognizer.configure(local=False if no_local else None)
    result = evaluate(recognizer, images, closed_set=closed_set, new_rate=cfg.index.new_rate)
    return result, f"Kenning, {index} on {data} ({split})"
