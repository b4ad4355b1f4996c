"""One reader of the environment (issue #10, item 7): ``detection_service.config.Settings`` is the
only code under ``detection_service/`` that reads ``AIDOOR_*`` variables; everything else gets a
``Settings`` (app state, the Dagster ``settings`` resource, the CLI). Plus the parsing of the
variables that moved into it.

Passing the whole environment on to a child process (``dict(os.environ)``, ``{**os.environ, ...}``)
and setting ``AIDOOR_*`` in that copy is not reading a variable and is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from detection_service.config import DEFAULT_BOOTSTRAP_EXPORTS, DEFAULT_TEACHER_MODEL, ConfigError, Settings

PACKAGE = Path(__file__).resolve().parents[1] / "detection_service"
READER = PACKAGE / "config.py"

_NAMES_AIDOOR = re.compile(r"""^[ \t]*([A-Za-z_]\w*)[ \t]*(?::[^=\n]+)?=[ \t]*[rbuf]*["']AIDOOR_""", re.M)
_ALIAS = re.compile(r"^[ \t]*([A-Za-z_]\w*)[ \t]*(?::[^=\n]+)?=[^\n]*\bos\.environ\b", re.M)


def aidoor_constants(sources: list[str]) -> set[str]:
    """Names assigned a string that starts with AIDOOR_ (``DEMO_ENV = "AIDOOR_DEMO_VIDEO"``,
    ``ENV_PREFIX = "AIDOOR_"``), in any of the files: a read through one is a read too."""
    return {name for text in sources for name in _NAMES_AIDOOR.findall(text)}


def env_reads(text: str, constants: set[str]) -> list[str]:
    """Reads of an AIDOOR_* variable in ``text``: ``os.environ.get(...)``, ``os.environ[...]``
    (not an assignment), ``os.getenv(...)``, ``... in os.environ``, also through a name bound to
    ``os.environ`` or a copy of it, with a literal ``"AIDOOR_..."`` or a constant naming one."""
    name = r"""(?:[rbuf]*["']AIDOOR_\w*["']?""" + "".join(f"|{re.escape(c)}\\b" for c in sorted(constants)) + ")"
    sources = {r"(?:os\.)?environ"} | {re.escape(a) for a in _ALIAS.findall(text)}
    source = r"\b(?:" + "|".join(sorted(sources)) + r")"
    patterns = [
        source + r"\s*\.\s*get\s*\(\s*" + name,  # environ.get("AIDOOR_X"), env.get(NAME)
        source + r"\s*\[\s*" + name + r"[^\]]*\](?!\s*=[^=])",  # environ["AIDOOR_X"], not environ[...] = ...
        r"\bgetenv\s*\(\s*" + name,  # os.getenv("AIDOOR_X")
        name + r"\s+(?:not\s+)?in\s+" + source + r"\b",  # "AIDOOR_X" in os.environ
    ]
    return [match.group(0) for pattern in patterns for match in re.finditer(pattern, text)]


def test_only_config_reads_aidoor_variables() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    texts = {path: path.read_text(encoding="utf-8") for path in files}
    constants = aidoor_constants(list(texts.values()))
    offenders = {
        str(path.relative_to(PACKAGE.parent)): reads
        for path, text in texts.items()
        if path != READER and (reads := env_reads(text, constants))
    }
    assert not offenders, f"read AIDOOR_* through detection_service.config.Settings instead: {offenders}"
    # The check is not vacuous: it sees the reader's own reads.
    assert env_reads(texts[READER], constants)


@pytest.mark.parametrize(
    "snippet",
    [
        'os.environ.get("AIDOOR_DEMO_VIDEO", "")',
        "value = os.environ['AIDOOR_TEACHER_MODEL']",
        'os.getenv("AIDOOR_PORT")',
        'if "AIDOOR_X" in os.environ:',
        'from os import environ\nenviron.get("AIDOOR_X")',
        'os.environ.get(\n    "AIDOOR_X")',
        'os.environ.get(f"AIDOOR_{name}")',
        'DEMO_ENV = "AIDOOR_DEMO_VIDEO"\nos.environ.get(DEMO_ENV, "")',
        'IMPORT_DIRS_ENV: str = "AIDOOR_DATASET_IMPORT_DIRS"\nraw = os.environ[IMPORT_DIRS_ENV]',
        'env = os.environ if environ is None else environ\nenv.get("AIDOOR_ROBOFLOW_API_KEY")',
        'env = dict(os.environ)\nurl = env.get("AIDOOR_DATABASE_URL")',
    ],
)
def test_the_check_finds_reads(snippet: str) -> None:
    assert env_reads(snippet, aidoor_constants([snippet]))


@pytest.mark.parametrize(
    "snippet",
    [
        'env = dict(os.environ)\nenv["AIDOOR_DATA_DIR"] = str(data_dir)\nenv.setdefault("AIDOOR_DEMO_VIDEO", "auto")',
        'env = {**os.environ, "AIDOOR_DATABASE_URL": url, "AIDOOR_PORT": str(port)}',
        'os.environ.get("SSL_CERT_FILE")',
        'os.environ.setdefault("DAGSTER_HOME", home)',
        'help="bind address (default AIDOOR_HOST)"',
    ],
)
def test_the_check_allows_pass_through_and_other_names(snippet: str) -> None:
    assert not env_reads(snippet, aidoor_constants([snippet]))


# --------------------------------------------------------------------------- parsing


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env(environ={f"AIDOOR_{k.upper()}": v for k, v in env.items()}, data_dir=tmp_path)


def test_defaults_of_the_moved_variables(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert s.demo_video == ""
    assert s.dataset_import_dirs == () and s.import_dirs == ((tmp_path / "imports").resolve(),)
    assert s.bootstrap_dataset == DEFAULT_BOOTSTRAP_EXPORTS
    assert [p.name for p in DEFAULT_BOOTSTRAP_EXPORTS] == ["doorbell-camera-alert-v4", "person-capston2-v11"]
    assert s.teacher_model == DEFAULT_TEACHER_MODEL
    assert DEFAULT_TEACHER_MODEL.parent == Path(__file__).resolve().parents[2] / "shared" / "models"
    assert (s.roboflow_workspace, s.roboflow_api_key, s.roboflow_api_url) == (None, None, None)
    assert s.roboflow_timeout_s == 1800.0 and s.bench_database_url is None


def test_values_of_the_moved_variables(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        demo_video=" auto ",
        dataset_import_dirs=f"{tmp_path}/a::~/b: ",
        bootstrap_dataset="/x/door:/x/people:",
        teacher_model="/models/teacher",
        roboflow_workspace=" ws ",
        roboflow_api_key="key",
        roboflow_api_url="http://127.0.0.1:9/",
        roboflow_timeout_s="120",
        bench_database_url="sqlite:///bench.db",
    )
    assert s.demo_video == "auto"
    assert s.import_dirs == ((tmp_path / "a").resolve(), (Path.home() / "b").resolve())
    assert s.bootstrap_dataset == (Path("/x/door"), Path("/x/people"))
    assert s.teacher_model == Path("/models/teacher")
    assert (s.roboflow_workspace, s.roboflow_api_key, s.roboflow_api_url) == ("ws", "key", "http://127.0.0.1:9/")
    assert s.roboflow_timeout_s == 120.0 and s.bench_database_url == "sqlite:///bench.db"
    assert settings(tmp_path, demo_video="/videos/door.mp4").demo_video == "/videos/door.mp4"
    assert settings(tmp_path, bootstrap_dataset="").bootstrap_dataset == DEFAULT_BOOTSTRAP_EXPORTS  # empty = unset


@pytest.mark.parametrize("value", ["off", "OFF", "none", "0"])
def test_teacher_model_off(tmp_path: Path, value: str) -> None:
    assert settings(tmp_path, teacher_model=value).teacher_model is None


def test_bools_ints_and_the_other_fields_still_parse(tmp_path: Path) -> None:
    assert settings(tmp_path, s3_secure="yes").s3_secure is True
    assert settings(tmp_path, s3_secure="On").s3_secure is True
    assert settings(tmp_path, s3_secure="0").s3_secure is False
    s = settings(
        tmp_path,
        port=" 9000 ",
        host="0.0.0.0",
        log_level="debug",
        telegram_updates="OFF",
        telegram_api_url="http://fake/",
        image_url_ttl_s="60",
    )
    assert (s.port, s.public_url, s.public_url_set, s.log_level) == (9000, "http://127.0.0.1:9000", False, "DEBUG")
    assert (s.telegram_updates, s.telegram_api_url, s.image_url_ttl_s) == ("off", "http://fake", 60)
    s = settings(tmp_path, public_url="https://door.example.org/")
    assert (s.public_url, s.public_url_set) == ("https://door.example.org", True)
    # DAGSTER_HOME keeps Dagster's own name; AIDOOR_PUBLIC_URL_SET is no variable.
    s = Settings.from_env(
        environ={"DAGSTER_HOME": str(tmp_path / "dh"), "AIDOOR_PUBLIC_URL_SET": "true"}, data_dir=tmp_path
    )
    assert s.dagster_home == (tmp_path / "dh").resolve() and s.public_url_set is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"port": "eighty"}, "AIDOOR_PORT must be an integer, got 'eighty'"),
        ({"dagster_port": "3000.5"}, "AIDOOR_DAGSTER_PORT must be an integer"),
        ({"s3_secure": "maybe"}, "AIDOOR_S3_SECURE must be true or false, got 'maybe'"),
        ({"roboflow_timeout_s": "soon"}, "AIDOOR_ROBOFLOW_TIMEOUT_S must be a number, got 'soon'"),
        ({"roboflow_timeout_s": "0"}, "AIDOOR_ROBOFLOW_TIMEOUT_S must be a positive number"),
        ({"image_url_ttl_s": "0"}, "AIDOOR_IMAGE_URL_TTL_S must be between 1 and 604800"),
        ({"telegram_updates": "carrier-pigeon"}, "AIDOOR_TELEGRAM_UPDATES must be auto, polling, webhook or off"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings(tmp_path, **env)


def test_a_bad_value_stops_the_cli_and_the_app(tmp_path: Path, monkeypatch, capsys) -> None:
    from detection_service.app import create_app
    from detection_service.cli import main as cli_main

    monkeypatch.setenv("AIDOOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AIDOOR_ROBOFLOW_TIMEOUT_S", "half an hour")
    assert cli_main(["dagster-home"]) == 2
    assert "AIDOOR_ROBOFLOW_TIMEOUT_S must be a number" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="AIDOOR_ROBOFLOW_TIMEOUT_S"):
        create_app()


def test_secrets_stay_out_of_the_repr(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        roboflow_api_key="rf-secret",
        s3_secret_key="s3-secret",
        telegram_key="tg-secret",
        url_signing_key="hmac-secret",
        s3_endpoint="http://s3",
        s3_access_key="ak",
    )
    assert not any(secret in repr(s) for secret in ("rf-secret", "s3-secret", "tg-secret", "hmac-secret"))
    assert "roboflow_api_key=***" in repr(s) and "s3_access_key='ak'" in repr(s)


def test_the_call_sites_use_the_settings(tmp_path: Path) -> None:
    from detection_service.bootstrap import bootstrap_exports
    from detection_service.ml.teacher import teacher_model_path

    teacher = tmp_path / "teacher.pt"
    assert teacher_model_path(settings(tmp_path, teacher_model=str(teacher))) is None  # not there
    teacher.write_bytes(b"weights")
    assert teacher_model_path(settings(tmp_path, teacher_model=str(teacher))) == teacher
    assert teacher_model_path(settings(tmp_path, teacher_model="off")) is None

    main, extra, missing = tmp_path / "main", tmp_path / "extra", tmp_path / "missing"
    extra.mkdir()
    (extra / "data.yaml").write_text("names: [package]\n")
    # The main export is kept even when missing (the caller reports it); missing extras are left out.
    assert bootstrap_exports(settings(tmp_path, bootstrap_dataset=f"{main}:{extra}:{missing}")) == [main, extra]
