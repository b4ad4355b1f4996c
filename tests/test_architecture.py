"""Architecture rules (issue #10 items 1 and 2), checked by reading the source.

* No handler digs services out of ``app.state``: controllers declare what they need as parameters
  and the providers in ``detection_service/api/dependencies.py`` inject it (that module and the app
  factory are the only readers of ``app.state``).
* Services know nothing of HTTP: no ``litestar`` import under ``detection_service/services/`` and
  no exception raised with a status code; they raise the domain errors of
  ``detection_service/errors.py``, which ``api/responses.HTTP_STATUS`` maps to a status.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from detection_service import errors
from detection_service.api.responses import HTTP_STATUS

ROOT = Path(__file__).resolve().parents[1] / "detection_service"
API_EXEMPT = {"dependencies.py"}  # the DI module; app.py lives outside api/
STATE = re.compile(r"\bapp\.state\b|\.app\.state\b|getattr\([^)]*\bapp\b[^)]*\"state\"")


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """Source lines without comments and docstrings (a docstring may well mention app.state)."""
    tree = ast.parse(path.read_text())
    doc_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                doc_lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return [(n, line.split("#", 1)[0]) for n, line in enumerate(path.read_text().splitlines(), 1) if n not in doc_lines]


def test_no_handler_reads_app_state() -> None:
    offenders = [
        f"{path.relative_to(ROOT.parent)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "api").glob("*.py"))
        if path.name not in API_EXEMPT
        for n, line in _code_lines(path)
        if STATE.search(line)
    ]
    assert not offenders, "handlers must declare their dependencies, not read app.state:\n" + "\n".join(offenders)


def test_the_state_check_catches_a_handler_that_reads_it() -> None:
    assert STATE.search("        return request.app.state.settings_service")
    assert STATE.search("    store = getattr(request.app.state, 'object_store', None)")
    assert STATE.search("state = connection.app.state")
    assert not STATE.search("def get_all(self, settings_service: SettingsService) -> Response:")


def _http_raises(path: Path, root: Path = ROOT) -> list[str]:
    """``raise X(<int 100..599>, ...)`` or ``raise X(status=...|status_code=...)`` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Raise) or not isinstance(node.exc, ast.Call):
            continue
        call = node.exc
        first = call.args[0] if call.args else None
        status_arg = isinstance(first, ast.Constant) and type(first.value) is int and 100 <= first.value <= 599
        status_kw = any(k.arg in ("status", "status_code") for k in call.keywords)
        if status_arg or status_kw:
            found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {ast.unparse(call)[:100]}")
    return found


def _litestar_imports(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [
            f"{path.relative_to(root.parent)}:{node.lineno}: import {n}"
            for n in names
            if n == "litestar" or n.startswith("litestar.")
        ]
    return found


def test_services_raise_domain_errors_not_http_statuses() -> None:
    files = sorted((ROOT / "services").rglob("*.py")) + sorted((ROOT / "notifications").rglob("*.py"))
    offenders = [hit for path in files for hit in _http_raises(path) + _litestar_imports(path)]
    assert not offenders, "services must raise detection_service.errors kinds and not import litestar:\n" + "\n".join(
        offenders
    )


def test_the_service_check_catches_an_http_status(tmp_path: Path) -> None:
    sample = tmp_path / "services" / "bad.py"
    sample.parent.mkdir()
    sample.write_text(
        "from litestar.exceptions import HTTPException\n"
        "def f():\n    raise ServiceError(409, 'BUSY', 'busy')\n"
        "def g():\n    raise HTTPException(status_code=404)\n"
        "def h():\n    raise Conflict('busy', code='BUSY')\n"
    )
    assert len(_http_raises(sample, tmp_path)) == 2
    assert len(_litestar_imports(sample, tmp_path)) == 1


def test_every_domain_error_kind_has_a_status() -> None:
    kinds = [k for k in vars(errors).values() if isinstance(k, type) and issubclass(k, errors.DomainError)]
    unmapped = [k.__name__ for k in kinds if k is not errors.DomainError and k not in HTTP_STATUS]
    assert not unmapped, f"add these kinds to api/responses.HTTP_STATUS: {unmapped}"


# One reader of the environment (issue #10 item 7, checked here for item 10): ``Settings`` in the
# config module is the only code under detection_service/ that reads an ``AIDOOR_*`` variable.
# Building a child process's environment (``env["AIDOOR_X"] = ...``, ``{**os.environ, "AIDOOR_X": ...}``,
# ``env.setdefault(...)``) writes, it does not read, and is allowed.
CONFIG_MODULES = {"config.py", "config"}
_ENV_READS = {"get", "pop", "__getitem__", "__contains__"}


def _is_environ(node: ast.expr, aliases: set[str]) -> bool:
    """``os.environ``, a name like ``env``/``environ``, or one bound to a copy of it (``e = dict(os.environ)``)."""
    if isinstance(node, ast.Attribute) and node.attr == "environ":
        return True
    if isinstance(node, ast.IfExp):
        return _is_environ(node.body, aliases) or _is_environ(node.orelse, aliases)
    return isinstance(node, ast.Name) and ("env" in node.id.lower() or node.id in aliases)


def _aidoor_name(node: ast.expr | None, constants: dict[str, str] | None = None) -> bool:
    """A string naming an ``AIDOOR_*`` variable: a literal, an f-string, or a module constant holding one."""
    if isinstance(node, ast.Name) and constants and node.id in constants:
        return True
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.startswith("AIDOOR_")
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        return isinstance(first, ast.Constant) and str(first.value).startswith("AIDOOR_")
    return False


def _aidoor_env_reads(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text())
    constants = {
        target.id: node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and _aidoor_name(node.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    aliases = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and (
            _is_environ(node.value, set())
            or (isinstance(node.value, ast.Call) and any(_is_environ(a, set()) for a in node.value.args))
            or (
                isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute)
                and node.value.func.attr == "copy"
                and _is_environ(node.value.func.value, set())
            )
        )
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    found = []
    for node in ast.walk(tree):
        hit = False
        if isinstance(node, ast.Call) and node.args and _aidoor_name(node.args[0], constants):
            func = node.func
            method = isinstance(func, ast.Attribute) and func.attr in _ENV_READS and _is_environ(func.value, aliases)
            getenv = (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"
            )
            hit = method or getenv
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            hit = _is_environ(node.value, aliases) and _aidoor_name(node.slice, constants)
        elif isinstance(node, ast.Compare) and _aidoor_name(node.left, constants):
            hit = any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and any(
                _is_environ(c, aliases) for c in node.comparators
            )
        if hit:
            found.append((node.lineno, f"{path.relative_to(root.parent)}:{node.lineno}: {ast.unparse(node)[:100]}"))
    return [text for _, text in sorted(found)]


def test_only_the_config_module_reads_aidoor_variables() -> None:
    offenders = [
        hit
        for path in sorted(ROOT.rglob("*.py"))
        if path.relative_to(ROOT).parts[0] not in CONFIG_MODULES
        for hit in _aidoor_env_reads(path)
    ]
    assert not offenders, "read AIDOOR_* through Settings (detection_service/config.py):\n" + "\n".join(offenders)


def test_the_environment_check_catches_a_read(tmp_path: Path) -> None:
    sample = tmp_path / "services" / "bad.py"
    sample.parent.mkdir()
    sample.write_text(
        "import os\nfrom os import environ, getenv\n"
        "a = os.environ.get('AIDOOR_A', '1')\n"
        "b = os.environ['AIDOOR_B']\n"
        "c = getenv('AIDOOR_C')\n"
        "d = 'AIDOOR_D' in environ\n"
        "env = dict(os.environ)\n"
        "e = env.get(f'AIDOOR_{name}')\n"
        "f = os.environ.pop('AIDOOR_F', None)\n"
        # writes into a child's environment are not reads
        "env['AIDOOR_DATA_DIR'] = '/x'\n"
        "env.setdefault('AIDOOR_DEMO_VIDEO', 'auto')\n"
        "child = {**os.environ, 'AIDOOR_DATABASE_URL': 'sqlite://'}\n"
        "g = os.environ.get('HOME')\n"
        "DEMO = 'AIDOOR_DEMO_VIDEO'\n"
        "def h(environ=None):\n"
        "    source = os.environ if environ is None else environ\n"
        "    return source.get(DEMO), source['AIDOOR_H']\n"
    )
    hits = _aidoor_env_reads(sample, tmp_path)
    assert [h.split(":")[1] for h in hits] == ["3", "4", "5", "6", "8", "9", "17", "17"], hits


# Batch jobs have one owner (issue #10 item 3): detection_service/batch_jobs.py is the only module
# that writes ``batch_jobs`` rows. Everywhere else (the services, the API, ml/, the assets, the
# sensors, the CLI) may read them, but there is no ``BatchJob(`` constructor, no
# ``update/insert/delete(BatchJob)``, no SQL text that writes the table, and no assignment (or
# ``setattr``) of a job column (``status``, ``current_step``, ...) on a job object: a name bound
# from an expression that mentions ``BatchJob`` or the owner's readers (``waiting_for_a_run``,
# ``of_training``), or any name with "job" in it.
REPO = ROOT.parent
JOB_OWNER = REPO / "detection_service" / "batch_jobs.py"
JOB_COLUMNS = {
    "status",
    "progress_percentage",
    "current_step",
    "total_steps",
    "result",
    "error_message",
    "dagster_run_id",
    "scheduled_at",
    "started_at",
    "completed_at",
    "parameters",
    "priority",
}
JOB_TABLE_WRITE = re.compile(r"(?i)\b(update|insert\s+into|delete\s+from)\s+[`\"]?batch_jobs\b")


JOB_SOURCES = re.compile(r"\bBatchJob\b|\bwaiting_for_a_run\b|\bof_training\b")


def _bound_names(target: ast.expr) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _job_names(tree: ast.AST) -> set[str]:
    """Names bound to job rows: ``job = session.get(BatchJob, 1)``, ``for row in jobs.waiting_for_a_run(s)``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and JOB_SOURCES.search(ast.unparse(node.value)):
            names.update(n for t in node.targets for n in _bound_names(t))
        elif (isinstance(node, (ast.For, ast.comprehension)) and JOB_SOURCES.search(ast.unparse(node.iter))) or (
            isinstance(node, ast.NamedExpr) and JOB_SOURCES.search(ast.unparse(node.value))
        ):
            names.update(_bound_names(node.target))
    return names


def _job_like(node: ast.expr, names: set[str]) -> bool:
    """``job``, ``batch_job``, ``self.job``, ``jobs[0]`` or a name bound to a job row."""
    while isinstance(node, ast.Subscript):
        node = node.value
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return "job" in name.lower() or name in names


def _batch_job_writes(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text())
    where = str(path.relative_to(root))
    names = _job_names(tree)
    found: list[tuple[int, str]] = []

    def hit(node: ast.AST, what: str) -> None:
        found.append((node.lineno, f"{where}:{node.lineno}: {what}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name == "BatchJob":
                hit(node, f"constructs a job row: {ast.unparse(node)[:80]}")
            elif (
                name in ("update", "insert", "delete") and node.args and ast.unparse(node.args[0]).endswith("BatchJob")
            ):
                hit(node, f"writes the table: {ast.unparse(node)[:80]}")
            elif name == "setattr" and node.args and _job_like(node.args[0], names):
                hit(node, f"sets a job attribute: {ast.unparse(node)[:80]}")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            flat = [e for t in targets for e in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])]
            written = [
                t for t in flat if isinstance(t, ast.Attribute) and t.attr in JOB_COLUMNS and _job_like(t.value, names)
            ]
            if written:
                hit(node, f"assigns {', '.join(ast.unparse(t) for t in written)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and JOB_TABLE_WRITE.search(node.value):
            hit(node, f"SQL that writes batch_jobs: {node.value[:80]!r}")
    return [text for _, text in sorted(found)]


def test_only_the_job_owner_writes_batch_jobs() -> None:
    files = [
        path
        for top in ("detection_service", "assets", "orchestration", "schemas")
        for path in sorted((REPO / top).rglob("*.py"))
        if path != JOB_OWNER and "migrations" not in path.parts and path != REPO / "schemas" / "db.py"
    ]
    assert JOB_OWNER.exists() and len(files) > 50  # the walk sees the tree
    offenders = [hit for path in files for hit in _batch_job_writes(path)]
    assert not offenders, "write batch_jobs through detection_service.batch_jobs.BatchJobs:\n" + "\n".join(offenders)
    assert _batch_job_writes(JOB_OWNER)  # the owner itself does all of these


def test_the_job_owner_check_catches_a_write(tmp_path: Path) -> None:
    sample = tmp_path / "assets" / "bad.py"
    sample.parent.mkdir()
    sample.write_text(
        "import sqlalchemy as sa\n"
        "from schemas.db import BatchJob, ModelTraining\n"
        "def f(session, jobs, training):\n"
        "    session.add(BatchJob(job_type='dataset_update', job_name='x'))\n"
        "    job = session.get(BatchJob, 1)\n"
        "    job.status = 'completed'\n"
        "    job.status, job.completed_at = 'failed', None\n"
        "    setattr(job, 'current_step', 'x')\n"
        "    session.execute(sa.update(BatchJob).values(status='cancelled'))\n"
        "    session.execute(sa.text('UPDATE batch_jobs SET status = :s'))\n"
        "    jobs[0].progress_percentage += 1\n"
        "    training.status = 'failed'\n"  # another table: allowed
        "    row = session.get(ModelTraining, 1); row.status = 'failed'\n"
        "    jobs.complete(1, {'ok': True})\n"  # through the owner: allowed
        "    print(job.status)\n"  # reading is allowed
        "    other = session.scalar(sa.select(BatchJob).limit(1))\n"
        "    other.current_step = 'x'\n"
        "    for pending in jobs.waiting_for_a_run(session):\n"
        "        pending.status = 'failed'\n"
        "    for row in session.scalars(sa.select(ModelTraining)):\n"
        "        row.completed_at = None\n"  # another table: allowed
    )
    hits = _batch_job_writes(sample, tmp_path)
    assert [int(h.split(":")[1]) for h in hits] == [4, 6, 7, 8, 9, 10, 11, 17, 19], hits


# --------------------------------------------------------------------------- the realtime side
# (issue #10, items 4, 5 and 8)

KEY_LAYOUT = re.compile(r"""f["'](?:events|datasets|models)/|["'](?:events|datasets|models)/\{""")
KEYS_MODULE = REPO / "detection_service" / "storage" / "keys.py"
# A benchmark's throw-away captures, stored before their event rows exist (not the events/ layout).
KEY_LAYOUT_EXEMPT = {REPO / "detection_service" / "bench" / "retrain.py"}


def _key_layouts(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if path == KEYS_MODULE or path in KEY_LAYOUT_EXEMPT:
            continue
        found += [f"{rel}:{n}: {line.strip()}" for n, line in _code_lines(path) if KEY_LAYOUT.search(line)]
    return found


def test_object_keys_are_built_in_one_module() -> None:
    found = _key_layouts(REPO / "detection_service") + _key_layouts(REPO / "assets")
    assert not found, "object-store keys are built by detection_service/storage/keys.py only:\n" + "\n".join(found)


def test_the_key_check_catches_a_layout(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text('def k(i):\n    return f"models/{i}/best.pt"\n')
    assert _key_layouts(tmp_path) == ['m.py:2: return f"models/{i}/best.pt"']


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_notifications_import_no_pipeline_internals_and_keep_no_module_state() -> None:
    # The notifier hears of events through the bus (detection_service/bus.py) only: nothing of the
    # pipeline or of its control side (realtime/) is imported (import-linter's layers say the same).
    for path in sorted((ROOT / "notifications").glob("*.py")):
        reached = {
            m for m in _imports(path) if m.startswith(("detection_service.pipeline", "detection_service.realtime"))
        }
        assert not reached, f"{path.name} imports pipeline internals: {sorted(reached)}"
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)], f"{path.name} rebinds module state"


def test_one_path_records_an_event() -> None:
    # Only record_event inserts a DetectionEvent and queues its alerts (manual detection calls it).
    pattern = re.compile(r"\bEventCreated\(")
    publishers = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted(ROOT.rglob("*.py"))
        for n, line in _code_lines(path)
        if pattern.search(line) and path.name != "bus.py"
    ]
    assert publishers == [p for p in publishers if p.startswith("pipeline/events.py:")] and len(publishers) == 1, (
        publishers
    )


def test_nothing_outside_the_pipeline_reads_its_private_attributes() -> None:
    private = re.compile(r"\b(?:pipeline|recorder|writer|holder)\._[a-z]")
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted(ROOT.rglob("*.py"))
        if "pipeline" not in path.relative_to(ROOT).parts
        for n, line in _code_lines(path)
        if private.search(line)
    ]
    assert not found, "\n".join(found)


def test_retry_loops_use_the_one_backoff() -> None:
    # A hand-written doubling (delay * 2, min(delay * 2, cap), 2 ** n) outside retry.py is a second backoff.
    doubling = re.compile(
        r"\b(?:delay|backoff|wait|retry)\w*\s*\*\s*2\b|\b2(?:\.0)?\s*\*\*\s*\w*(?:restart|retr|attempt)"
    )
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted(ROOT.rglob("*.py"))
        if path.name != "retry.py"
        for n, line in _code_lines(path)
        if doubling.search(line)
    ]
    assert not found, "use detection_service.retry.Backoff:\n" + "\n".join(found)
