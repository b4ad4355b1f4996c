"""Datasets: export reading, imports into the object store, Roboflow sync against a fake API,
auto-collect from verified events, and the /api/datasets endpoints."""

from __future__ import annotations

import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import msgspec
import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from detection_service.config import Settings
from detection_service.database import make_engine, make_session_factory
from detection_service.datasets import importer, run_dataset_update
from detection_service.datasets.auto_collect import BoxError, collect_verified, parse_bbox, split_for_event
from detection_service.datasets.export_reader import (
    ArchiveTooLargeError,
    ExportError,
    NoValidImagesError,
    UnknownClassesError,
    UnsafeArchiveError,
    read_export,
)
from detection_service.datasets.importer import (
    DatasetConflict,
    ImportRejected,
    NothingToCollect,
    import_dataset,
    slugify,
    validate_dataset_id,
)
from detection_service.datasets.roboflow_sync import RoboflowError, roboflow_credentials, sync_roboflow
from detection_service.storage import LocalObjectStore, ObjectStore, S3ObjectStore, StorageError
from schemas.db import BatchJob, Dataset, DatasetVersion, DetectionEvent, EventImage, ObjectType
from tests.conftest import SHARED_DATASETS
from tests.fakes.roboflow_api import serve_fake_roboflow, zip_folder

DOORBELL = SHARED_DATASETS / "doorbell-camera-alert-v4"
PACKAGES = SHARED_DATASETS / "packages-v6"

pytestmark = pytest.mark.skipif(not PACKAGES.is_dir(), reason=f"shared datasets missing: {SHARED_DATASETS}")


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture
def session_factory(migrated_database_url: str) -> Iterator[sa.orm.sessionmaker]:
    engine = make_engine(migrated_database_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    store = LocalObjectStore(tmp_path / "objects", "test-bucket", "http://127.0.0.1:1", b"test-key")
    store.ensure_bucket()
    return store


def keys(store: ObjectStore, prefix: str = "datasets/") -> list[str]:
    return [info.key for info in store.list(prefix)]


def relative_files(store: ObjectStore, prefix: str) -> set[str]:
    return {key[len(prefix) :] for key in keys(store, prefix)}


def dataset_rows(session_factory) -> tuple[list[Dataset], list[DatasetVersion]]:
    with session_factory() as session:
        return (
            list(session.scalars(sa.select(Dataset).order_by(Dataset.id))),
            list(session.scalars(sa.select(DatasetVersion).order_by(DatasetVersion.id))),
        )


def jpeg(width: int = 64, height: int = 48, value: int = 128) -> bytes:
    image = np.full((height, width, 3), value, np.uint8)
    cv2.rectangle(image, (5, 5), (20, 20), (255, 0, 0), -1)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def make_export(root: Path, names: list[str], files: dict[str, bytes | str]) -> Path:
    """A small export: data.yaml + the given files (relative path -> content)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(
        yaml.safe_dump(
            {
                "train": "../train/images",
                "val": "../valid/images",
                "nc": len(names),
                "names": names,
            }
        )
    )
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
    return root


def packages_subset(root: Path, train: int = 4, valid: int = 2) -> dict[str, bytes | str]:
    """A few real images + labels of packages-v6 as make_export files."""
    files: dict[str, bytes | str] = {}
    for split, count in (("train", train), ("valid", valid)):
        for image in sorted((PACKAGES / split / "images").iterdir())[:count]:
            files[f"{split}/images/{image.name}"] = image.read_bytes()
            files[f"{split}/labels/{image.stem}.txt"] = (PACKAGES / split / "labels" / f"{image.stem}.txt").read_text()
    return files


# --------------------------------------------------------------------------------- reading exports


def test_read_export_packages_v6() -> None:
    with read_export(PACKAGES) as report:
        assert len(report.items) == 26 and report.rejected == 0 and report.errors == []
        assert report.class_mapping == {"package": "package"}
        assert {item.split for item in report.items} == {"train", "valid", "test"}
        assert sum(len(item.boxes) for item in report.items) == 42
        assert all(set(item.boxes) == {1} for item in report.items)  # "package" is model class 1
        assert report.roboflow and report.roboflow["project"] == "packages-g0ton"


def test_bad_files_are_rejected_with_a_per_file_report(tmp_path: Path) -> None:
    files = packages_subset(tmp_path)
    good = next(v for k, v in files.items() if k.endswith(".jpg"))
    files.update(
        {
            "train/images/corrupt.jpg": b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10,
            "train/labels/corrupt.txt": "0 0.5 0.5 0.2 0.2\n",
            "train/images/empty.jpg": b"",
            "train/images/truncated.jpg": good[: len(good) // 3],
            "train/images/notes.jpg": "hello, I am text",
            "train/images/malformed.jpg": jpeg(),
            "train/labels/malformed.txt": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5\n",
            "train/images/outside.jpg": jpeg(),
            "train/labels/outside.txt": "0 1.7 0.5 0.2 0.2\n",
            "train/images/badclass.jpg": jpeg(),
            "train/labels/badclass.txt": "3 0.5 0.5 0.2 0.2\n",
            "train/images/polygon.jpg": jpeg(),
            "train/labels/polygon.txt": "0 0.1 0.1 0.4 0.1 0.4 0.3 0.1 0.3\n",
            "train/images/background.jpg": jpeg(),
            "valid/labels/orphan.txt": "0 0.5 0.5 0.1 0.1\n",
            "train/images/readme.md": "not an image",
        }
    )
    make_export(tmp_path / "export", ["package"], files)
    with read_export(tmp_path / "export") as report:
        accepted = {item.name: item for item in report.items}
        assert {"polygon.jpg", "background.jpg"} <= set(accepted)
        assert len(accepted) == 6 + 2
        assert accepted["background.jpg"].label == "" and accepted["background.jpg"].boxes == ()
        # The polygon became its bounding box, in model class ids (package = 1).
        assert accepted["polygon.jpg"].label == "1 0.25 0.2 0.3 0.2\n"
        assert report.rejected == 7
        errors = {(p.file, p.line) for p in report.errors}
        for name in ("corrupt", "empty", "truncated", "notes"):
            assert (f"train/images/{name}.jpg", None) in errors, name
        assert ("train/labels/malformed.txt", 2) in errors
        assert ("train/labels/outside.txt", 1) in errors
        assert ("train/labels/badclass.txt", 1) in errors
        messages = {p.file: p.problem for p in report.problems}
        assert "0 bytes" in messages["train/images/empty.jpg"]
        assert "rejected with its label" in messages["train/images/malformed.jpg"]
        warnings = {p.file for p in report.problems if p.severity == "warning"}
        assert {"train/labels/polygon.txt", "valid/labels/orphan.txt", "train/images/readme.md"} <= warnings


def test_unknown_classes_are_an_error_listing_them(tmp_path: Path, session_factory, store) -> None:
    files = packages_subset(tmp_path, train=2, valid=1)
    files["train/images/cat.jpg"] = jpeg()
    files["train/labels/cat.txt"] = "1 0.5 0.5 0.2 0.2\n2 0.3 0.3 0.1 0.1\n"
    export = make_export(tmp_path / "export", ["Box", "cat", "dog", "unused"], files)
    with pytest.raises(UnknownClassesError) as info:
        read_export(export)
    assert info.value.unknown == ["cat", "dog"]  # "unused" has no boxes: not an error
    assert info.value.instances == {"cat": 1, "dog": 1}
    with pytest.raises(UnknownClassesError):
        import_dataset(session_factory, store, export, "pets")
    assert keys(store) == [] and dataset_rows(session_factory) == ([], [])

    with pytest.raises(ExportError, match="must be one of"):
        read_export(export, {"cat": "dog"})
    # Mapped (or explicitly dropped) classes import.
    result = import_dataset(session_factory, store, export, "pets", class_mapping={"cat": "person", "dog": None})
    assert result.class_mapping == {"Box": "package", "cat": "person"}
    assert result.class_distribution["person"].instances == 1
    assert any("left out as the class mapping asked" in p.problem for p in result.problems)
    label = store.get_bytes("datasets/pets/v1/train/labels/cat.txt").decode()
    assert label == "0 0.5 0.5 0.2 0.2\n"


def test_names_as_mapping_and_zip_wrapped_in_a_folder(tmp_path: Path) -> None:
    export = make_export(tmp_path / "wrapper" / "My Export", ["package"], packages_subset(tmp_path, 2, 1))
    data = yaml.safe_load((export / "data.yaml").read_text())
    data["names"] = {0: "package"}
    (export / "data.yaml").write_text(yaml.safe_dump(data))
    archive = zip_folder(tmp_path / "wrapper", tmp_path / "export.zip")
    with read_export(archive, work_dir=tmp_path / "work") as report:
        assert len(report.items) == 3 and report.names == ["package"]
        extracted = report.root
        assert extracted.is_relative_to(tmp_path / "work")
    assert not extracted.exists()  # closing removes the extraction dir


def test_unsafe_and_oversized_archives_are_refused(tmp_path: Path) -> None:
    def archive(name: str, members: dict[str, bytes]) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("data.yaml", "names: [package]\n")
            for member, data in members.items():
                zf.writestr(member, data)
        return path

    for bad in ("../evil.txt", "/etc/evil.txt", "train/../../evil.txt", "C:/evil.txt", "..\\evil.txt"):
        with pytest.raises(UnsafeArchiveError):
            read_export(archive("unsafe.zip", {bad: b"x"}), work_dir=tmp_path / "work")
    with pytest.raises(ArchiveTooLargeError):  # 8 MB of zeros compress ~1000:1
        read_export(archive("bomb.zip", {"train/images/a.jpg": bytes(8 << 20)}), work_dir=tmp_path / "work")
    with pytest.raises(ArchiveTooLargeError):
        read_export(
            archive("big.zip", {"train/images/a.jpg": jpeg()}), work_dir=tmp_path / "work", max_extract_bytes=100
        )
    (tmp_path / "not.zip").write_text("plain text")
    with pytest.raises(ExportError):
        read_export(tmp_path / "not.zip")
    assert not any((tmp_path / "work").iterdir())  # nothing left behind


def test_dataset_ids() -> None:
    assert slugify("Packages v2.1") == "packages-v2.1"
    assert slugify("택배") == ""
    assert slugify("2024") == "ds-2024"
    for good in ("packages_v2.1", "door-cam", "a"):
        assert validate_dataset_id(good) == good
    for bad in ("", "Upper", "123", "a/b", "a..b", "-x", "x" * 51, ".hidden"):
        with pytest.raises(ValueError):
            validate_dataset_id(bad)


# --------------------------------------------------------------------------------- imports


@pytest.mark.skipif(not DOORBELL.is_dir(), reason="doorbell-camera-alert-v4 missing")
def test_import_doorbell_875_images(session_factory, store: LocalObjectStore) -> None:
    started = time.perf_counter()
    result = import_dataset(session_factory, store, DOORBELL, "doorbell", name="Doorbell camera alert")
    elapsed = time.perf_counter() - started
    print(f"\nimport of 875 images (local store): {elapsed:.2f} s")
    assert elapsed < 60
    assert (result.dataset_id, result.version, result.rejected, result.problems) == ("doorbell", "v1", 0, [])
    assert result.total_images == 875 and result.total_labels == 4550
    assert {s: c.images for s, c in result.splits.items()} == {"train": 593, "valid": 282}
    dist = result.class_distribution
    assert (dist["package"].images, dist["package"].instances) == (875, 4550)
    assert all(dist[c].images == dist[c].instances == 0 for c in ("person", "delivery_food", "mail"))
    assert result.class_mapping == {"Box": "package"}

    stored = keys(store)
    assert len(stored) == 875 * 2 + 1 and "datasets/doorbell/v1/.importing" not in stored
    data = yaml.safe_load(store.get_bytes("datasets/doorbell/v1/data.yaml"))
    assert data == {
        "path": ".",
        "train": "train/images",
        "val": "valid/images",
        "nc": 4,
        "names": ["person", "package", "delivery_food", "mail"],
    }
    [dataset], [version] = dataset_rows(session_factory)
    assert (dataset.dataset_id, dataset.name, dataset.version) == ("doorbell", "Doorbell camera alert", "v1")
    assert (dataset.storage_path, dataset.yaml_path) == ("datasets/doorbell/", "datasets/doorbell/v1/data.yaml")
    assert (dataset.total_images, dataset.total_labels) == (875, 4550)
    assert dataset.class_distribution["package"]["instances"] == 4550
    assert dataset.class_distribution["package"]["by_split"]["valid"]["images"] == 282
    changes = json.loads(version.changes)
    assert (version.version, version.image_count) == ("v1", 875)
    assert changes["original_classes"] == ["Box"] and changes["class_mapping"] == {"Box": "package"}


def test_versions_increase_and_replace_or_merge(session_factory, store, tmp_path: Path) -> None:
    first = import_dataset(session_factory, store, PACKAGES, "packages", name="Packages")
    assert (first.version, first.total_images, first.total_labels) == ("v1", 26, 42)
    assert {s: c.images for s, c in first.splits.items()} == {"train": 19, "valid": 4, "test": 3}
    assert yaml.safe_load(store.get_bytes(first.yaml_path))["test"] == "test/images"

    extra = make_export(
        tmp_path / "extra",
        ["package"],
        {
            "train/images/new.jpg": jpeg(),
            "train/labels/new.txt": "0 0.5 0.5 0.2 0.2\n",
        },
    )
    replaced = import_dataset(session_factory, store, extra, "packages")
    assert (replaced.version, replaced.total_images) == ("v2", 1)
    merged = import_dataset(session_factory, store, extra, "packages", merge=True, version="2024.1")
    assert (merged.version, merged.base_version, merged.total_images) == ("2024.1", "v2", 1)
    merged = import_dataset(session_factory, store, PACKAGES, "packages", merge=True)
    assert (merged.version, merged.base_version, merged.total_images) == ("v3", "2024.1", 27)
    with pytest.raises(DatasetConflict):
        import_dataset(session_factory, store, extra, "packages", version="v2")
    # Older versions stay as they were.
    assert len(relative_files(store, "datasets/packages/v1/")) == 26 * 2 + 1
    [dataset], versions = dataset_rows(session_factory)
    assert [v.version for v in versions] == ["v1", "v2", "2024.1", "v3"]
    assert (dataset.version, dataset.total_images) == ("v3", 27)


def test_rejected_files_strict_and_ratio(session_factory, store, tmp_path: Path) -> None:
    files = packages_subset(tmp_path)
    files["train/images/corrupt.jpg"] = b"garbage" * 100
    export = make_export(tmp_path / "export", ["package"], files)
    with pytest.raises(ImportRejected) as info:
        import_dataset(session_factory, store, export, "strict", strict=True)
    assert info.value.details["rejected"] == 1
    assert info.value.details["problems"][0]["file"] == "train/images/corrupt.jpg"
    assert keys(store) == [] and dataset_rows(session_factory) == ([], [])
    with pytest.raises(ImportRejected):
        import_dataset(session_factory, store, export, "strict", max_problem_ratio=0.1)

    result = import_dataset(session_factory, store, export, "lenient")
    assert (result.total_images, result.rejected) == (6, 1)
    assert [p.file for p in result.problems if p.severity == "error"] == ["train/images/corrupt.jpg"]
    assert "datasets/lenient/v1/train/images/corrupt.jpg" not in keys(store)
    [version] = dataset_rows(session_factory)[1]
    assert json.loads(version.changes)["rejected"] == 1

    only_bad = make_export(tmp_path / "bad", ["package"], {"train/images/x.jpg": b""})
    with pytest.raises(NoValidImagesError):
        import_dataset(session_factory, store, only_bad, "lenient")


class FlakyStore(LocalObjectStore):
    """Fails the n-th upload (as a full disk or a dropped connection would)."""

    def __init__(self, *args, fail_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fail_at = fail_at
        self.puts = 0

    def _put_file(self, key: str, path: Path, content_type: str) -> None:
        self.puts += 1
        if self.puts == self.fail_at:
            raise StorageError("injected failure")
        super()._put_file(key, path, content_type)


def test_failure_mid_upload_leaves_no_objects_and_no_rows(session_factory, tmp_path: Path, monkeypatch) -> None:
    store = FlakyStore(tmp_path / "objects", "test-bucket", "http://127.0.0.1:1", b"k", fail_at=15)
    store.ensure_bucket()
    with pytest.raises(StorageError, match="injected"):
        import_dataset(session_factory, store, PACKAGES, "flaky")
    assert store.puts >= 15
    assert keys(store) == [] and dataset_rows(session_factory) == ([], [])

    # A failing database commit after a complete upload: the same.
    store.fail_at = -1

    def broken_commit(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT", {}, Exception("injected database failure"))

    monkeypatch.setattr(importer, "_commit", broken_commit)
    with pytest.raises(sa.exc.OperationalError):
        import_dataset(session_factory, store, PACKAGES, "flaky")
    assert keys(store) == [] and dataset_rows(session_factory) == ([], [])
    monkeypatch.undo()
    # The failed attempts removed their version marker too: the number is free again.
    assert import_dataset(session_factory, store, PACKAGES, "flaky").version == "v1"


@pytest.mark.s3
def test_import_into_s3(session_factory, s3_server) -> None:
    store = S3ObjectStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, f"ds-{uuid.uuid4().hex[:8]}")
    store.ensure_bucket()
    result = import_dataset(session_factory, store, PACKAGES, "packages")
    assert (result.total_images, result.total_labels, result.rejected) == (26, 42, 0)
    files = relative_files(store, "datasets/packages/v1/")
    assert len(files) == 26 * 2 + 1 and "data.yaml" in files
    image = next(f for f in files if f.startswith("train/images/"))
    assert store.get_bytes(f"datasets/packages/v1/{image}") == (PACKAGES / image).read_bytes()


# --------------------------------------------------------------------------------- Roboflow


def test_roboflow_sync_matches_upload(session_factory, store, tmp_path: Path) -> None:
    uploaded = import_dataset(session_factory, store, PACKAGES, "uploaded")
    with serve_fake_roboflow(PACKAGES, tmp_path) as fake:
        # As the Dagster job runs it: job parameters from the API, credentials from the environment
        # (the code location's Settings, the ``settings`` resource).
        settings = Settings.from_env(
            environ={
                "AIDOOR_ROBOFLOW_WORKSPACE": fake.workspace,
                "AIDOOR_ROBOFLOW_API_KEY": fake.api_key,
                "AIDOOR_ROBOFLOW_API_URL": fake.url,
                "AIDOOR_ROBOFLOW_TIMEOUT_S": "120",
            },
            data_dir=tmp_path / "data",
        )
        parameters = {
            "source": "roboflow",
            "workspace": fake.workspace,
            "project_name": fake.project,
            "version": fake.version,
            "dataset_id": None,
            "class_mapping": None,
        }
        with pytest.raises(RoboflowError, match="not configured"):  # no settings, no credentials
            run_dataset_update(session_factory, store, parameters, tmp_path / "work")
        synced = run_dataset_update(session_factory, store, parameters, tmp_path / "work", settings=settings)
        paths = fake.paths()
        with pytest.raises(RoboflowError) as info:
            sync_roboflow(
                session_factory,
                store,
                fake.workspace,
                "wrong-key-abc",
                fake.project,
                fake.version,
                tmp_path / "work",
                dataset_id="never",
                api_url=fake.url,
                timeout_s=120,
            )
    assert info.value.stage == "auth" and "wrong-key" not in str(info.value)
    assert paths[0] == "/?api_key=***" and paths[-1] == "/download/export.zip"
    assert sum("/6/yolov8" in p for p in paths) >= 2  # answered 202 first, then the link
    assert synced.dataset_id == "packages-g0ton" and synced.source == "roboflow"
    for field in ("total_images", "total_labels", "background_images", "class_distribution", "splits", "rejected"):
        assert getattr(synced, field) == getattr(uploaded, field), field
    assert relative_files(store, synced.storage_path) == relative_files(store, uploaded.storage_path)
    for rel in relative_files(store, synced.storage_path):
        assert store.get_bytes(synced.storage_path + rel) == store.get_bytes(uploaded.storage_path + rel), rel
    with session_factory() as session:
        dataset = session.scalar(sa.select(Dataset).where(Dataset.dataset_id == "packages-g0ton"))
        assert (dataset.roboflow_project, dataset.roboflow_version) == ("packages-g0ton", "6")
        assert dataset.last_sync_at is not None
        assert session.scalar(sa.select(Dataset).where(Dataset.dataset_id == "never")) is None
    assert not any((tmp_path / "work").iterdir())  # download folders removed


def test_roboflow_credentials_from_env(tmp_path: Path) -> None:
    def credentials(env: dict[str, str]):
        return roboflow_credentials(Settings.from_env(environ=env, data_dir=tmp_path))

    with pytest.raises(RoboflowError, match="AIDOOR_ROBOFLOW_API_KEY"):
        credentials({"AIDOOR_ROBOFLOW_WORKSPACE": "ws"})
    creds = credentials({"AIDOOR_ROBOFLOW_WORKSPACE": " ws ", "AIDOOR_ROBOFLOW_API_KEY": "secret"})
    assert (creds.workspace, creds.api_key, creds.api_url, creds.timeout_s) == ("ws", "secret", None, 1800.0)
    assert "secret" not in repr(creds)


def test_roboflow_is_not_imported_by_the_app() -> None:
    # The SDK reads API_URL at import time; nothing in-process may import it before the child does.
    import subprocess
    import sys

    code = (
        "import sys, detection_service.app, detection_service.datasets.roboflow_sync; print('roboflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------- auto-collect


def add_event(
    session, type_code: str, *, verified=True, false_positive=False, bbox=None, image_path=None, images=()
) -> int:
    type_id = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == type_code))
    event = DetectionEvent(
        object_type_id=type_id,
        user_verified=verified,
        is_false_positive=false_positive,
        bbox_coordinates=json.dumps(bbox) if bbox is not None else None,
        image_path=image_path,
    )
    event.images = [EventImage(image_path=key, sequence_number=seq) for seq, key in images]
    session.add(event)
    session.flush()
    return event.id


def test_parse_bbox() -> None:
    main, frames = parse_bbox(
        '{"x1": 10, "y1": 20, "x2": 50, "y2": 60, "width": 100, "height": 80, '
        '"frames": {"2": {"x1": 0, "y1": 0, "x2": 10, "y2": 10}}}'
    )
    assert main.to_yolo(999, 999) == pytest.approx((0.3, 0.5, 0.4, 0.5))  # the JSON's frame size wins
    assert frames[2].to_yolo(100, 80) == pytest.approx((0.05, 0.0625, 0.1, 0.125))
    for bad in (
        None,
        "",
        "[1]",
        "{}",
        '{"x1": 5, "y1": 0, "x2": 1, "y2": 1}',
        '{"x1": "a", "y1": 0, "x2": 1, "y2": 1}',
    ):
        with pytest.raises(BoxError):
            parse_bbox(bad)


def test_auto_collect_verified_events(session_factory, store, tmp_path: Path) -> None:
    import_dataset(session_factory, store, PACKAGES, "door")
    for key in ("events/1/main.jpg", "events/1/2.jpg", "events/1/3.jpg", "events/2/1.jpg", "events/4/1.jpg"):
        store.put_bytes(key, jpeg(64, 48), "image/jpeg")
    store.put_bytes("events/5/broken.jpg", b"not a jpeg", "image/jpeg")
    with session_factory.begin() as session:
        package = add_event(
            session,
            "package",
            image_path="events/1/main.jpg",
            bbox={
                "x1": 16,
                "y1": 12,
                "x2": 48,
                "y2": 36,
                "width": 64,
                "height": 48,
                "frames": {"2": {"x1": 0, "y1": 0, "x2": 32, "y2": 24}},
            },
            images=[(1, "events/1/main.jpg"), (2, "events/1/2.jpg"), (3, "events/1/3.jpg")],
        )
        false_positive = add_event(session, "person", false_positive=True, images=[(1, "events/2/1.jpg")])
        unverified = add_event(
            session, "mail", verified=False, bbox={"x1": 1, "y1": 1, "x2": 9, "y2": 9}, images=[(1, "events/4/1.jpg")]
        )
        unclassified = add_event(
            session, "unclassified", bbox={"x1": 1, "y1": 1, "x2": 9, "y2": 9}, images=[(1, "events/4/1.jpg")]
        )
        missing = add_event(
            session, "mail", bbox={"x1": 1, "y1": 1, "x2": 9, "y2": 9}, images=[(1, "events/9/gone.jpg")]
        )
        broken = add_event(
            session, "mail", bbox={"x1": 1, "y1": 1, "x2": 9, "y2": 9}, images=[(1, "events/5/broken.jpg")]
        )

    result = collect_verified(session_factory, store, "door")
    assert (result.version, result.base_version, result.source) == ("v2", "v1", "auto_collect")
    assert result.collected_events == [package, false_positive]
    assert result.total_images == 26 + 3 and result.background_images == 1
    assert result.class_distribution["package"].instances == 42 + 2
    assert result.class_distribution["person"].instances == 0
    # Every capture of an event lands in the event's split (a hash of its id; door v1 has a valid split).
    prefix = f"datasets/door/v2/{split_for_event(package)}/"
    assert store.get_bytes(prefix + f"labels/event_{package}_1.txt") == b"1 0.500000 0.500000 0.500000 0.500000\n"
    assert store.get_bytes(prefix + f"labels/event_{package}_2.txt") == b"1 0.250000 0.250000 0.500000 0.500000\n"
    assert (
        store.get_bytes(f"datasets/door/v2/{split_for_event(false_positive)}/labels/event_{false_positive}_1.txt")
        == b""
    )
    assert f"{prefix}images/event_{package}_3.jpg" not in keys(store)  # capture without a box
    problems = {p.file: p.problem for p in result.problems if p.severity == "error"}
    assert set(problems) == {f"event {unclassified}", f"event {missing}", f"event {broken}"}
    assert f"event {unverified}" not in {p.file for p in result.problems}
    assert len(relative_files(store, "datasets/door/v2/")) == len(relative_files(store, "datasets/door/v1/")) + 6
    [dataset], versions = dataset_rows(session_factory)
    assert json.loads(versions[-1].changes)["events_collected"] == [package, false_positive]
    assert (dataset.version, dataset.total_images) == ("v2", 29)

    # Collected once: a second run (as the Dagster job makes it) finds only the unusable ones again.
    with pytest.raises(NothingToCollect):
        run_dataset_update(session_factory, store, {"source": "auto_collect", "dataset_id": "door"}, tmp_path)

    # auto_label=False: captures go to unlabeled/, false positives still become backgrounds.
    unlabeled = collect_verified(session_factory, store, "door-raw", auto_label=False)
    assert unlabeled.version == "v1" and unlabeled.unlabeled_images == 4  # package 3 + unclassified 1
    assert unlabeled.total_images == 1 and unlabeled.background_images == 1
    assert f"datasets/door-raw/v1/unlabeled/images/event_{package}_3.jpg" in keys(store)
    assert not any("/unlabeled/labels/" in k for k in keys(store))


# --------------------------------------------------------------------------------- API


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    return body["error"]


def test_api_create_get_list(client) -> None:
    created = client.post("/api/datasets/create", json={"name": "Front door v1", "description": "mine"})
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert (data["dataset_id"], data["version"], data["total_images"]) == ("front-door-v1", None, 0)
    assert_error(client.post("/api/datasets/create", json={"name": "Front door v1"}), 409, "CONFLICT")
    assert_error(
        client.post("/api/datasets/create", json={"name": "x", "dataset_id": "Bad/Id"}), 400, "INVALID_DATASET_ID"
    )
    assert_error(client.post("/api/datasets/create", json={"description": "no name"}), 400, "VALIDATION_ERROR")
    korean = client.post("/api/datasets/create", json={"name": "택배"}).json()["data"]
    assert korean["dataset_id"].startswith("dataset-")

    by_slug = client.get("/api/datasets/front-door-v1").json()["data"]
    by_id = client.get(f"/api/datasets/{data['id']}").json()["data"]
    assert by_slug == by_id and by_slug["versions"] == []
    listed = client.get("/api/datasets").json()["data"]
    assert [d["dataset_id"] for d in listed] == ["front-door-v1", korean["dataset_id"]]
    assert_error(client.get("/api/datasets/nope"), 404, "NOT_FOUND")
    assert_error(client.get("/api/datasets/999"), 404, "NOT_FOUND")


def test_api_update_from_source_path_and_upload(client, tmp_path: Path) -> None:
    client.post("/api/datasets/create", json={"name": "Packages", "dataset_id": "pk"})
    state = client.app.state  # as if started with AIDOOR_DATASET_IMPORT_DIRS=<shared datasets>
    state.settings = msgspec.structs.replace(state.settings, dataset_import_dirs=(SHARED_DATASETS.resolve(),))
    response = client.put("/api/datasets/pk/import", json={"source_path": str(PACKAGES)})
    assert response.status_code == 200, response.text
    result = response.json()["data"]
    assert (result["version"], result["total_images"], result["total_labels"]) == ("v1", 26, 42)
    assert result["class_distribution"]["package"]["images"] == 26

    assert_error(client.put("/api/datasets/pk/import", json={"source_path": "/etc"}), 403, "SOURCE_PATH_NOT_ALLOWED")
    assert_error(
        client.put("/api/datasets/pk/import", json={"source_path": str(SHARED_DATASETS / "nope")}),
        400,
        "INVALID_EXPORT",
    )
    assert_error(client.put("/api/datasets/nope/import", json={"source_path": str(PACKAGES)}), 404, "NOT_FOUND")
    assert_error(client.put("/api/datasets/pk/import", json={"wrong": 1}), 400, "VALIDATION_ERROR")
    assert_error(
        client.put("/api/datasets/pk/update", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    # The seed's endpoint takes the upload only; a server path has its own JSON route.
    error = assert_error(
        client.put("/api/datasets/pk/update", json={"source_path": str(PACKAGES)}), 415, "UNSUPPORTED_MEDIA_TYPE"
    )
    assert "/import" in error["message"]
    assert_error(
        client.put("/api/datasets/pk/import", content=b"{", headers={"content-type": "application/json"}),
        400,
        "MALFORMED_BODY",
    )

    # Multipart: a small zip export, with a version label and a class mapping.
    export = make_export(
        tmp_path / "up",
        ["package", "courier"],
        {
            **packages_subset(tmp_path, 2, 1),
            "train/images/courier.jpg": jpeg(),
            "train/labels/courier.txt": "1 0.5 0.5 0.4 0.8\n",
        },
    )
    archive = zip_folder(export, tmp_path / "up.zip").read_bytes()
    response = client.put(
        "/api/datasets/pk/update",
        files={"file": ("up.zip", archive, "application/zip")},
        data={"version": "2025.08", "class_mapping": json.dumps({"courier": "person"})},
    )
    assert response.status_code == 200, response.text
    result = response.json()["data"]
    assert (result["version"], result["total_images"], result["source"]) == ("2025.08", 4, "upload")
    assert result["class_distribution"]["person"]["instances"] == 1

    error = assert_error(
        client.put("/api/datasets/pk/update", files={"images": ("up.zip", archive, "application/zip")}),
        400,
        "UNKNOWN_CLASSES",
    )
    assert error["details"]["unknown_classes"] == ["courier"]
    assert_error(
        client.put("/api/datasets/pk/update", files={"file": ("x.zip", b"not a zip", "application/zip")}),
        400,
        "INVALID_EXPORT",
    )
    assert_error(
        client.put("/api/datasets/pk/update", data={"version": "x"}, files={"other": ("a", b"a")}), 400, "MISSING_FILE"
    )
    assert_error(  # typed form fields: a bad value is a 400 before anything is imported
        client.put("/api/datasets/pk/update", data={"strict": "maybe"}, files={"file": ("up.zip", archive)}),
        400,
        "VALIDATION_ERROR",
    )
    corrupt = make_export(tmp_path / "corrupt", ["package"], {"train/images/x.jpg": b"junk"})
    error = assert_error(
        client.put(
            "/api/datasets/pk/update", files={"file": ("c.zip", zip_folder(corrupt, tmp_path / "c.zip").read_bytes())}
        ),
        400,
        "NO_VALID_IMAGES",
    )
    assert error["details"]["problems"][0]["file"] == "train/images/x.jpg"

    detail = client.get("/api/datasets/pk").json()["data"]
    assert [v["version"] for v in detail["versions"]] == ["v1", "2025.08"]
    assert detail["version"] == "2025.08" and detail["yaml_path"] == "datasets/pk/2025.08/data.yaml"
    assert detail["versions"][0]["changes"]["splits"]["train"]["images"] == 19
    store = client.app.state.object_store
    assert not list((client.app.state.settings.data_dir / "tmp" / "dataset-imports").iterdir())  # temp files gone
    assert store.exists("datasets/pk/2025.08/train/labels/courier.txt")


def test_api_jobs_for_auto_collect_and_roboflow(client) -> None:
    client.post("/api/datasets/create", json={"name": "door"})
    response = client.post("/api/datasets/auto-collect", json={"dataset_id": "door", "auto_label": False})
    assert response.status_code == 202, response.text
    job = response.json()["data"]
    assert (job["job_type"], job["status"]) == ("dataset_update", "pending")
    assert job["parameters"] == {
        "source": "auto_collect",
        "dataset_id": "door",
        "auto_label": False,
        "since_version": None,
    }
    assert_error(client.post("/api/datasets/auto-collect", json={"dataset_id": "nope"}), 404, "NOT_FOUND")

    body = {"project_name": "packages-g0ton", "version": 6}
    error = assert_error(client.post("/api/datasets/roboflow/sync", json=body), 400, "ROBOFLOW_NOT_CONFIGURED")
    assert "AIDOOR_ROBOFLOW_WORKSPACE" in error["message"]
    state = client.app.state  # as if started with AIDOOR_ROBOFLOW_WORKSPACE / AIDOOR_ROBOFLOW_API_KEY
    state.settings = msgspec.structs.replace(
        state.settings, roboflow_workspace="joseph-nelson", roboflow_api_key="super-secret-key"
    )
    response = client.post("/api/datasets/roboflow/sync", json=body)
    assert response.status_code == 202, response.text
    job = response.json()["data"]
    assert job["parameters"] == {
        "source": "roboflow",
        "workspace": "joseph-nelson",
        "project_name": "packages-g0ton",
        "version": 6,
        "dataset_id": "packages-g0ton",
        "class_mapping": None,
    }
    assert "super-secret-key" not in response.text
    assert_error(
        client.post("/api/datasets/roboflow/sync", json={"project_name": "p", "version": "latest"}),
        400,
        "VALIDATION_ERROR",
    )
    with client.app.state.session_factory() as session:
        assert session.scalar(sa.select(sa.func.count(BatchJob.id))) == 2
