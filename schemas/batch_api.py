"""Bodies and answers of the Batch API (``/api/batch``), over the ``batch_jobs`` rows."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from schemas.batch_jobs import BatchJobView


class BatchTriggerRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    job_type: Annotated[
        str,
        msgspec.Meta(
            description="dataset_update, model_retrain, storage_cleanup, log_archive, dataset_materialize, "
            "model_evaluation (docs/orchestration.md: each type's parameters)"
        ),
    ]
    parameters: Annotated[
        dict[str, Any] | None, msgspec.Meta(description="the job type's typed parameters (none for the clean-ups)")
    ] = None
    job_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    priority: Annotated[int, msgspec.Meta(ge=1, le=10, description="1 = highest")] = 5


class BatchJobInfo(BatchJobView, kw_only=True):
    """A batch job with the link to its run in the Dagster UI (once a run claimed it)."""

    dagster_run_url: str | None = None


class BatchCancelResult(msgspec.Struct, kw_only=True):
    job: BatchJobInfo
    # Dagster runs of the job that were asked to terminate, and why that failed if it did (the row
    # is cancelled either way: a run that still ends cannot change it).
    terminated_run_ids: list[str]
    termination_error: str | None = None
