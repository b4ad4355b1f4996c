"""The fixed evaluation set as an asset, and the evaluation of a model registered from elsewhere.

- ``evaluation_set``: appends the newly frozen images (base datasets of the deployed model's
  lineage, collected valid events) as a new ``evaluation-set`` dataset version; unchanged when
  there is nothing new (docs/evaluation.md).
- ``registered_model_evaluation_job``: a model registered with ``aidoor model register`` (a
  ``.pt`` or an ``*_openvino_model`` folder, classes mapped by name) is evaluated on the latest
  set and gated against the champion like any challenger; deploying it stays a person's decision.
"""

from pathlib import Path

import dagster as dg
import msgspec
import sqlalchemy as sa

from assets.resources import DatabaseResource, LocalPathsResource, ObjectStoreResource
from detection_service.batch_jobs import BatchJobs
from detection_service.datasets.evaluation_set import (
    imported_dataset_refs,
    model_base_refs,
    update_evaluation_set,
)
from detection_service.ml.evaluation import per_class_table
from detection_service.ml.ultralytics_env import configure_offline
from detection_service.services.settings import SettingsService
from schemas.db import Model

HEAVY = {"aidoor/heavy": "true"}


def collected_dataset_id(session_factory) -> str:
    return SettingsService(session_factory).get("training").auto_collect_dataset_id


def evaluation_set_metadata(update) -> dict:
    return {
        "ref": update.ref,
        "version": update.version,
        "created": update.created,
        "images": dg.MetadataValue.int(update.images),
        "groups": dg.MetadataValue.json(update.groups),
        "scopes": dg.MetadataValue.json(update.scopes),
        "added": dg.MetadataValue.json(update.added),
        "near_duplicates_dropped": dg.MetadataValue.json(update.near_duplicates_dropped),
        "frozen_collected_events": dg.MetadataValue.int(update.frozen_events),
    }


def gate_metadata(outcome) -> dict:
    verdict = outcome.verdict
    rows = {"challenger": outcome.challenger}
    if outcome.champion is not None and verdict.champion_id != verdict.challenger_id:
        rows["champion"] = outcome.champion
    return {
        "challenger": verdict.challenger_id,
        "champion": verdict.champion_id or "none",
        "evaluation_set": verdict.split,
        "challenger_mAP50": dg.MetadataValue.float(verdict.challenger.get("map50", 0.0)),
        "challenger_mAP50-95": dg.MetadataValue.float(verdict.challenger.get("map50_95", 0.0)),
        "champion_mAP50": dg.MetadataValue.float((verdict.champion or {}).get("map50", 0.0)),
        "champion_mAP50-95": dg.MetadataValue.float((verdict.champion or {}).get("map50_95", 0.0)),
        "per_class": dg.MetadataValue.md(per_class_table(rows)),
        "passed": verdict.passed,
        "verdict": verdict.reason,
        "rule": verdict.rule,
    }


class EvaluationSetConfig(dg.Config):
    # "dataset_id@version" refs of base datasets; empty: the deployed model's lineage (or, with no
    # model, every imported dataset's latest version).
    sources: list[str] = []
    collected_dataset_id: str | None = None  # default: training.auto_collect_dataset_id


@dg.asset(
    group_name="models",
    kinds={"s3"},
    description="The fixed evaluation set of the gate (dataset evaluation-set, append-only versions): base "
    "valid splits without near-duplicates of their train images, plus frozen collected verified images.",
)
def evaluation_set(
    context: dg.AssetExecutionContext,
    config: EvaluationSetConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
    paths: LocalPathsResource,
) -> dg.MaterializeResult:
    session_factory = database.session_factory()
    sources = list(config.sources)
    if not sources:
        with session_factory() as session:
            champion = session.scalar(sa.select(Model).where(Model.is_current.is_(True)))
            sources = model_base_refs(champion) or imported_dataset_refs(session)
    collected = config.collected_dataset_id or collected_dataset_id(session_factory)
    update = update_evaluation_set(session_factory, object_store.store(), paths.cache_dir(), sources, collected)
    context.log.info(f"{update.ref}: {update.images} images" + (f", added {update.added}" if update.created else ""))
    return dg.MaterializeResult(metadata=evaluation_set_metadata(update))


class RegisteredModelEvaluationConfig(dg.Config):
    batch_job_id: int | None = None
    model_id: str


@dg.op(
    tags=HEAVY,
    description="Evaluates a registered model on the fixed evaluation set and gates it "
    "against the deployed champion (verdict in models.metrics.gate).",
)
def evaluate_registered_model(
    context: dg.OpExecutionContext,
    config: RegisteredModelEvaluationConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
    paths: LocalPathsResource,
) -> dg.Output[dict]:
    from detection_service.ml.gating import run_gate

    configure_offline(Path(paths.data_dir))
    session_factory = database.session_factory()
    step = f"evaluating {config.model_id} on the fixed evaluation set"
    with BatchJobs(session_factory).running(config.batch_job_id, context.run_id, step) as job:
        outcome = run_gate(
            session_factory,
            object_store.store(),
            paths.cache_dir(),
            config.model_id,
            collected_dataset_id=collected_dataset_id(session_factory),
            on_log=context.log.info,
        )
        evaluation = outcome.challenger
        with session_factory.begin() as session:
            row = session.scalar(sa.select(Model).where(Model.model_id == config.model_id))
            metrics = dict(row.metrics or {})
            # A model from elsewhere has no training split: its registry numbers are the fixed set's.
            if not metrics.get("dataset"):
                metrics.update({k: evaluation["metrics"][k] for k in ("map50", "map50_95", "precision", "recall")})
                metrics["per_class"] = [
                    [e["name"], e["images"], e["instances"], e["precision"], e["recall"], e["map50"], e["map50_95"]]
                    for e in evaluation["per_class"]
                ]
                metrics["inference_ms"] = evaluation["inference_ms"]
                metrics["evaluated_on"] = outcome.verdict.split
                row.accuracy = round(float(evaluation["metrics"]["map50"]), 4)
                row.inference_time = round(evaluation["inference_ms"])
            row.metrics = metrics
            job.complete(
                {
                    "model_id": config.model_id,
                    "evaluation_set": outcome.verdict.split,
                    "metrics": evaluation["metrics"],
                    "gate": {"passed": outcome.verdict.passed, "reason": outcome.verdict.reason},
                },
                session=session,
            )
    context.log.info(f"gate: {outcome.verdict.reason}")
    if outcome.evaluation_set.created:
        context.log_event(
            dg.AssetMaterialization(
                asset_key="evaluation_set", metadata=evaluation_set_metadata(outcome.evaluation_set)
            )
        )
    return dg.Output(msgspec.to_builtins(outcome.verdict), metadata=gate_metadata(outcome))


@dg.job(
    tags=HEAVY,
    description="Evaluate a registered model (aidoor model register) on the fixed evaluation set "
    "and gate it against the champion.",
)
def registered_model_evaluation_job():
    evaluate_registered_model()
