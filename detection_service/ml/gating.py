"""Running the gate: both models on the latest fixed evaluation set, the verdict stored.

Shared by the ``model_evaluation`` asset, the registered-model evaluation job and the deploy API
(``ModelService._gate``), so that all three compare the same way:

1. the evaluation set is brought up to date (``update_evaluation_set``: base datasets of both
   models' lineage not yet frozen, collected valid events not yet frozen; append-only);
2. each model is evaluated on its latest version with ``evaluation.evaluate_model`` (our models at
   their training size, others at the size they were exported for). An evaluation is stored in
   ``models.metrics.evaluations["evaluation-set@vN"]`` and reused: a champion is evaluated once per
   version of the set;
3. ``gate.judge`` decides on the per-class numbers; the verdict, with both models' per-class
   metrics, goes to the challenger's ``metrics.gate``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.datasets.evaluation_set import (
    EvaluationSetUpdate,
    evaluation_images,
    imported_dataset_refs,
    model_base_refs,
    update_evaluation_set,
)
from detection_service.ml import registry
from detection_service.ml.evaluation import EvalImage, evaluate_model
from detection_service.ml.gate import GateVerdict, judge
from detection_service.storage import ObjectStore
from schemas.db import Model

log = logging.getLogger(__name__)


@dataclass
class GateOutcome:
    verdict: GateVerdict
    evaluation_set: EvaluationSetUpdate
    challenger: dict[str, Any]  # stored evaluation: metrics, per_class, imgsz, inference_ms, ...
    champion: dict[str, Any] | None


def _find(session: Session, model_id: str) -> Model:
    row = session.scalar(sa.select(Model).where(Model.model_id == model_id))
    if row is None:
        raise LookupError(f"model {model_id} is not registered")
    return row


def evaluation_of(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    cache_dir: Path,
    model_id: str,
    ref: str,
    images: list[EvalImage],
    on_log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The model's evaluation on evaluation set ``ref`` (stored one reused, else evaluated and stored)."""
    with session_factory() as session:
        row = _find(session, model_id)
        stored = ((row.metrics or {}).get("evaluations") or {}).get(ref)
        model_path = row.model_path
    if stored:
        return stored
    local = registry.fetch_model(store, model_id, model_path, Path(cache_dir))
    if on_log:
        on_log(f"evaluating {model_id} on {ref} ({len(images)} images)")
    result = evaluate_model(local, images)
    evaluation = {**msgspec.to_builtins(result), "evaluation_set": ref}
    evaluation.pop("model", None)
    with session_factory.begin() as session:
        row = _find(session, model_id)
        metrics = dict(row.metrics or {})
        metrics["evaluations"] = {**(metrics.get("evaluations") or {}), ref: evaluation}
        row.metrics = metrics
    return evaluation


def run_gate(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    cache_dir: Path,
    challenger_id: str,
    *,
    champion_id: str | None = None,
    use_current: bool = True,
    collected_dataset_id: str | None = None,
    on_log: Callable[[str], None] | None = None,
) -> GateOutcome:
    """Compare ``challenger_id`` with ``champion_id`` (default: the deployed model) on the latest
    fixed evaluation set and store the verdict in the challenger's ``metrics.gate``."""
    with session_factory() as session:
        challenger = _find(session, challenger_id)
        champion = (
            _find(session, champion_id)
            if champion_id
            else (session.scalar(sa.select(Model).where(Model.is_current.is_(True))) if use_current else None)
        )
        sources = model_base_refs(champion) + model_base_refs(challenger)
        if not sources:
            sources = imported_dataset_refs(session)
        champion_id = champion.model_id if champion is not None else None
    update = update_evaluation_set(session_factory, store, cache_dir, sources, collected_dataset_id)
    if on_log:
        on_log(
            f"evaluation set {update.ref}: {update.images} images {update.groups}"
            + (f", new: {update.added}" if update.created else " (unchanged)")
            + (
                f", near-duplicates of train images left out: {update.near_duplicates_dropped}"
                if update.near_duplicates_dropped
                else ""
            )
        )
    ref, images = evaluation_images(session_factory, store, cache_dir, update.version)
    ours = evaluation_of(session_factory, store, cache_dir, challenger_id, ref, images, on_log)
    theirs = None
    if champion_id == challenger_id:
        theirs = ours
    elif champion_id:
        theirs = evaluation_of(session_factory, store, cache_dir, champion_id, ref, images, on_log)
    verdict = judge(
        challenger_id,
        ours["metrics"],
        champion_id,
        theirs["metrics"] if theirs else None,
        ref,
        ours["per_class"],
        theirs["per_class"] if theirs else None,
    )
    with session_factory.begin() as session:
        row = _find(session, challenger_id)
        row.metrics = {**(row.metrics or {}), "gate": msgspec.to_builtins(verdict)}
    return GateOutcome(verdict=verdict, evaluation_set=update, challenger=ours, champion=theirs)
