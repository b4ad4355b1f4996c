"""``GET /api/analytics/reports`` (issue 12, item 6): the stored report of a period as JSON (in the
envelope), CSV or a self-contained HTML page; a period with no report yet answers 202 with the
``report_generate`` batch job that will make it. Reports: services/reports.py, assets/reports.py."""

from __future__ import annotations

import threading
import weakref
from datetime import timedelta
from typing import Annotated, Any

from litestar import Controller, Response, get
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from sqlalchemy.orm import Session, sessionmaker

from detection_service.api.responses import ok
from detection_service.config import Settings
from detection_service.services.reports import Pending, ReportService
from detection_service.storage import ObjectStore
from schemas.envelope import Envelope
from schemas.reports import REPORT_CADENCE, ReportPending

_services: weakref.WeakKeyDictionary[sessionmaker[Session], ReportService] = weakref.WeakKeyDictionary()
_services_lock = threading.Lock()


def provide_report_service(
    session_factory: sessionmaker[Session], settings: Settings, object_store: ObjectStore | None
) -> ReportService:
    """One ReportService per app (two requests never queue the same report: BatchJobs.submit_once)."""
    with _services_lock:
        service = _services.get(session_factory)
        if service is None or service.time_zone != settings.alert_timezone or service.store is not object_store:
            service = _services[session_factory] = ReportService(session_factory, object_store, settings.alert_timezone)
        return service


TYPES_DOC = ", ".join(f"`{t}` (per {c})" for t, c in REPORT_CADENCE.items())


class ReportController(Controller):
    path = "/api/analytics"
    tags = ["Analytics"]
    dependencies = {"report_service": Provide(provide_report_service, sync_to_thread=False)}

    @get(
        "/reports",
        sync_to_thread=True,
        summary="A stored analytics report of one local day or week: JSON, CSV or HTML",
        description=f"Types: {TYPES_DOC}. Periods are local (alert time zone): a day `YYYY-MM-DD`, a week as "
        "any day of it or `YYYY-Www` (Monday to Sunday); default: the last one that is over. A period with no "
        "report yet answers 202 with the `report_generate` batch job that makes it (the one already queued, if "
        "any). `csv` is UTF-8 with a BOM; `html` is one self-contained page (inline charts, signed thumbnail "
        "links) that prints on one or two A4 pages. Bad values: INVALID_REPORT_TYPE, INVALID_PERIOD (also a "
        "period not over yet), INVALID_FORMAT.",
        responses={202: ResponseSpec(Envelope[ReportPending], description="No report yet: the job that makes it")},
    )
    def reports(
        self,
        report_service: ReportService,
        settings: Settings,
        report_type: Annotated[str, Parameter(query="type", description=TYPES_DOC)] = "daily_summary",
        period: Annotated[str | None, Parameter(description="YYYY-MM-DD, or YYYY-Www for a week")] = None,
        format: Annotated[str, Parameter(description="json | csv | html")] = "json",  # the seed names it format
    ) -> Response[Any]:
        served = report_service.serve(report_type, period, format, timedelta(seconds=settings.image_url_ttl_s))
        if isinstance(served, Pending):
            state = "queued now" if served.submitted else f"already {served.job.status}"
            return ok(
                ReportPending(
                    type=served.report_type, period=served.period, submitted=served.submitted, job=served.job
                ),
                message=f"no {served.report_type} report for {served.period} yet: batch job {served.job.id} "
                f"({state}) will make it",
                status_code=202,
            )
        name = f"{served.report_type}-{served.period}"
        if served.format == "csv":
            return Response(
                served.body,
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
            )
        if served.format == "html":
            return Response(served.body, media_type="text/html; charset=utf-8")
        return ok(served.body, message=f"{served.report_type} report for {served.period}")
