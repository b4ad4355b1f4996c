"""data.yaml versions: validation against the object store, the seven seed endpoints, history."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from detection_service.services.data_yaml import DataYamlService, InvalidDataYaml
from detection_service.storage.local import LocalObjectStore
from schemas.db import Dataset, DataYaml, DataYamlHistory

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
NAMES = ["person", "package", "delivery_food", "mail"]
VALID = """\
path: .
train: train/images
val: valid/images
test: test/images
nc: 4
names: [person, package, delivery_food, mail]
"""


def put_version(store, dataset_key: str, version: str, splits=("train", "valid", "test")) -> None:
    for split in splits:
        store.put_bytes(f"datasets/{dataset_key}/{version}/{split}/images/a.jpg", JPEG, "image/jpeg")
        store.put_bytes(f"datasets/{dataset_key}/{version}/{split}/labels/a.txt", b"0 0.5 0.5 0.1 0.1\n")


def add_dataset(client, dataset_key: str, version: str = "v1") -> int:
    with client.app.state.session_factory.begin() as session:
        ds = Dataset(
            dataset_id=dataset_key,
            name=dataset_key,
            version=version,
            storage_path=f"datasets/{dataset_key}",
            yaml_path=f"datasets/{dataset_key}/{version}/data.yaml",
        )
        session.add(ds)
        session.flush()
        return ds.id


def rows(client, dataset_pk: int) -> list[DataYaml]:
    with client.app.state.session_factory() as session:
        return list(session.scalars(sa.select(DataYaml).where(DataYaml.dataset_id == dataset_pk).order_by(DataYaml.id)))


def history(client, yaml_id: int) -> list[str]:
    with client.app.state.session_factory() as session:
        return list(
            session.scalars(
                sa.select(DataYamlHistory.change_type)
                .where(DataYamlHistory.yaml_config_id == yaml_id)
                .order_by(DataYamlHistory.id)
            )
        )


def error(response, status: int, code: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    return body["error"]


def data(response, status: int = 200):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]


# --- validation rules (no database: a transient Dataset and a local store) ----------------------


@pytest.fixture
def validator(tmp_path: Path):
    store = LocalObjectStore(tmp_path / "store", "ai-door-system", "http://testserver", b"k" * 32)
    store.ensure_bucket()
    put_version(store, "pk", "v1")
    put_version(store, "pk", "v2", splits=("train", "valid"))
    store.put_bytes("datasets/pk/v1/empty/labels/a.txt", b"")  # a folder without images
    service = DataYamlService(None, store)  # type: ignore[arg-type]  # parse_and_validate(Dataset) needs no DB
    dataset = Dataset(dataset_id="pk", name="pk", version="v1", storage_path="", yaml_path="")
    return lambda text, **kw: service.parse_and_validate(dataset, text, **kw)


def fields(problems) -> set[str]:
    return {p.field for p in problems}


def test_valid_yaml_is_parsed_and_resolved(validator):
    parsed, problems = validator(VALID)
    assert problems == []
    assert parsed.dataset_version == "v1"
    assert (parsed.train_path, parsed.val_path, parsed.test_path) == (
        "datasets/pk/v1/train/images",
        "datasets/pk/v1/valid/images",
        "datasets/pk/v1/test/images",
    )
    # Mapping form of names, dataset names that map to model classes, path naming a version.
    parsed, problems = validator(
        "path: v2\ntrain: ./train/images/\nval: valid/images\nnc: 2\nnames: {1: Box, 0: people}\n"
        "download_url: https://example.com/x.zip\n"
    )
    assert problems == []
    assert parsed.names == ["people", "Box"] and parsed.class_mapping == {"people": "person", "Box": "package"}
    assert parsed.train_path == "datasets/pk/v2/train/images" and parsed.test_path is None
    parsed, problems = validator("path: datasets/pk/v2\n" + VALID.split("\n", 1)[1].replace("test: test/images\n", ""))
    assert problems == [] and parsed.dataset_version == "v2"
    # base_version: what "path: ." means for a file stored in a version folder.
    parsed, problems = validator(VALID.replace("test: test/images\n", ""), base_version="v2")
    assert problems == [] and parsed.val_path == "datasets/pk/v2/valid/images"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {"yaml_content"}),
        ("- a\n- b\n", {"yaml_content"}),
        ("train: [unclosed\n", {"yaml_content"}),
        # every problem at once, not just the first
        (
            "train: /home/me/data/train/images\nval: ../valid/images\nnc: five\nnames: [person, cat, 3]\n",
            {"train", "val", "nc", "names[1]", "names[2]"},
        ),
        ("path: /data/pk\ntrain: train/images\nval: valid/images\nnc: 1\nnames: [person]\n", {"path"}),
        ("path: datasets/other/v1\ntrain: train/images\nval: valid/images\nnc: 1\nnames: [person]\n", {"path"}),
        ("train: C:\\data\\train\nval: empty/labels\nnc: 1\nnames: [person]\n", {"train", "val"}),
        ("train: train/images\nval: valid/images\nnames: {0: person, 2: mail}\n", {"names", "nc"}),
        ("train: train/images\nnc: 2\nnames: [person, Person]\ndownload_url: 5\n", {"val", "names[1]", "download_url"}),
    ],
)
def test_invalid_yaml_lists_every_problem(validator, text, expected):
    parsed, problems = validator(text)
    assert parsed is None
    assert fields(problems) == expected, problems
    assert all(p.message for p in problems)


def test_missing_and_imageless_split_folders(validator):
    _, problems = validator(VALID.replace("valid/images", "empty/labels").replace("test/images", "nope/images"))
    by_field = {p.field: p.message for p in problems}
    assert set(by_field) == {"val", "test"}
    assert "no images" in by_field["val"] and "does not exist" in by_field["test"]
    # v2 has no test split
    _, problems = validator("path: v2\n" + VALID.split("\n", 1)[1])
    assert fields(problems) == {"test"}


# --- the HTTP API -----------------------------------------------------------------------------


def test_invalid_create_is_400_with_every_problem_and_stores_nothing(client):
    store = client.app.state.object_store
    pk = add_dataset(client, "pk")
    put_version(store, "pk", "v1", splits=("train",))
    bad = "path: .\ntrain: train/images\nval: valid/images\nnc: 3\nnames: [person, package, cat, mail]\n"
    err = error(client.post("/api/datasets/pk/yaml", json={"yaml_content": bad}), 400, "INVALID_DATA_YAML")
    assert {p["field"] for p in err["details"]} == {"nc", "names[2]", "val"}
    assert all(set(p) == {"field", "message"} for p in err["details"])
    assert rows(client, pk) == []
    error(client.get("/api/datasets/pk/yaml"), 404, "NOT_FOUND")
    # Validation answers 200 either way: GET with a query parameter (seed) and POST with a body.
    result = data(client.get("/api/datasets/pk/yaml/validate", params={"yaml_content": bad}))
    assert result["valid"] is False and len(result["problems"]) == 3 and result["parsed"] is None
    result = data(client.post(f"/api/datasets/{pk}/yaml/validate", json={"yaml_content": bad}))
    assert result["valid"] is False and {p["field"] for p in result["problems"]} == {"nc", "names[2]", "val"}
    put_version(store, "pk", "v1")
    result = data(client.post("/api/datasets/pk/yaml/validate", json={"yaml_content": VALID}))
    assert result == {
        "valid": True,
        "problems": [],
        "parsed": {
            "dataset_version": "v1",
            "train_path": "datasets/pk/v1/train/images",
            "val_path": "datasets/pk/v1/valid/images",
            "test_path": "datasets/pk/v1/test/images",
            "nc": 4,
            "names": NAMES,
            "class_mapping": {n: n for n in NAMES},
            "download_url": None,
        },
    }
    assert rows(client, pk) == []  # validating stores nothing
    error(client.get("/api/datasets/pk/yaml/validate"), 400, "VALIDATION_ERROR")  # yaml_content missing
    error(client.post("/api/datasets/pk/yaml", json={"version": "1"}), 400, "VALIDATION_ERROR")


def test_create_update_activate_versions_changes(client):
    store = client.app.state.object_store
    pk = add_dataset(client, "pk")
    other = add_dataset(client, "other")
    put_version(store, "pk", "v1")

    first = data(client.post("/api/datasets/pk/yaml", json={"yaml_content": VALID}), 201)
    assert first["is_active"] is True and first["yaml_version"] == "1" and first["nc"] == 4
    assert first["train_path"] == "datasets/pk/v1/train/images" and first["yaml_content"] == VALID
    assert len(first["file_hash"]) == 64 and first["created_at"].endswith(("Z", "+00:00"))
    assert data(client.get(f"/api/datasets/{pk}/yaml"))["id"] == first["id"]  # numeric ref too
    assert history(client, first["id"]) == ["created", "activated"]

    # Update: field-level diff; same content again is a no-op.
    edited = "path: .\ntrain: train/images\nval: valid/images\nnc: 2\nnames: [Box, person]\n"
    updated = client.put(f"/api/datasets/pk/yaml/{first['id']}", json={"yaml_content": edited})
    assert data(updated)["nc"] == 2 and updated.json()["message"] == "data.yaml updated"
    assert data(updated)["is_active"] is True
    again = client.put(f"/api/datasets/pk/yaml/{first['id']}", json={"yaml_content": edited})
    assert again.json()["message"] == "data.yaml unchanged"
    changes = data(client.get(f"/api/datasets/pk/yaml/changes/{first['id']}"))
    assert [c["change_type"] for c in changes] == ["updated", "activated", "created"]  # newest first
    summary = changes[0]["changes_summary"]
    assert summary["content_changed"] is True
    assert summary["fields"]["nc"] == {"old": 4, "new": 2}
    assert summary["fields"]["names"] == {
        "old": NAMES,
        "new": ["Box", "person"],
        "added": ["Box"],
        "removed": ["package", "delivery_food", "mail"],
        "order_changed": False,
    }
    assert summary["fields"]["test_path"] == {"old": "datasets/pk/v1/test/images", "new": None}
    assert "train_path" not in summary["fields"]
    assert changes[0]["old_content"] == VALID and changes[0]["new_content"] == edited
    created = changes[2]["changes_summary"]["fields"]
    assert created["nc"] == {"old": None, "new": 4} and created["yaml_version"] == {"old": None, "new": "1"}
    # An invalid update changes nothing.
    response = client.put(f"/api/datasets/pk/yaml/{first['id']}", json={"yaml_content": "nc: 1\n"})
    err = error(response, 400, "INVALID_DATA_YAML")
    assert {p["field"] for p in err["details"]} == {"names", "train", "val"}

    # A second yaml: not active until activated; explicit version label; duplicates refused.
    second = data(client.post("/api/datasets/pk/yaml", json={"yaml_content": VALID, "version": "7"}), 201)
    assert second["is_active"] is False and second["yaml_version"] == "7"
    response = client.post("/api/datasets/pk/yaml", json={"yaml_content": VALID, "version": "7"})
    err = error(response, 400, "INVALID_DATA_YAML")
    assert [p["field"] for p in err["details"]] == ["version"]
    third = data(client.post("/api/datasets/pk/yaml", json={"yaml_content": VALID}), 201)
    assert third["yaml_version"] == "8"

    activated = client.post(f"/api/datasets/pk/yaml/{second['id']}/activate")
    assert data(activated)["is_active"] is True
    assert [(r.id, r.is_active) for r in rows(client, pk)] == [
        (first["id"], None),
        (second["id"], True),
        (third["id"], None),
    ]
    assert history(client, first["id"])[-1] == "deactivated"
    assert history(client, second["id"]) == ["created", "activated"]
    assert data(client.post(f"/api/datasets/pk/yaml/{second['id']}/activate"))["is_active"] is True  # idempotent
    assert history(client, second["id"]) == ["created", "activated"]
    assert data(client.get("/api/datasets/pk/yaml"))["id"] == second["id"]

    versions = data(client.get("/api/datasets/pk/yaml/versions"))
    assert [v["id"] for v in versions] == [third["id"], second["id"], first["id"]]
    assert [v["is_active"] for v in versions] == [False, True, False]
    assert "yaml_content" not in versions[0]
    assert data(client.get(f"/api/datasets/pk/yaml/{first['id']}"))["yaml_content"] == edited

    # 404s: unknown dataset, unknown yaml, another dataset's yaml, a dataset without yaml.
    error(client.get("/api/datasets/nope/yaml"), 404, "NOT_FOUND")
    error(client.get("/api/datasets/999999/yaml/versions"), 404, "NOT_FOUND")
    error(client.post("/api/datasets/nope/yaml", json={"yaml_content": VALID}), 404, "NOT_FOUND")
    error(client.put("/api/datasets/pk/yaml/999999", json={"yaml_content": VALID}), 404, "NOT_FOUND")
    error(client.post(f"/api/datasets/{other}/yaml/{first['id']}/activate"), 404, "NOT_FOUND")
    error(client.get(f"/api/datasets/other/yaml/changes/{first['id']}"), 404, "NOT_FOUND")
    error(client.get("/api/datasets/other/yaml"), 404, "NOT_FOUND")
    assert data(client.get("/api/datasets/other/yaml/versions")) == []


def test_ensure_generated_creates_and_activates_once_per_version(client):
    store = client.app.state.object_store
    service = DataYamlService(client.app.state.session_factory, store)
    pk = add_dataset(client, "gen")
    for version in ("v1", "v2"):
        put_version(store, "gen", version)
        store.put_bytes(f"datasets/gen/{version}/data.yaml", VALID.encode())

    info, created = service.ensure_generated("gen", "v1")
    assert created and info.is_active and info.yaml_version == "v1"
    assert service.ensure_generated(pk, "v1") == (info, False)  # idempotent
    # Same file content, next version: "path: ." is the file's own folder, so a new row for v2.
    info2, created = service.ensure_generated("gen", "v2")
    assert created and info2.train_path == "datasets/gen/v2/train/images"
    assert [(r.yaml_version, r.is_active) for r in rows(client, pk)] == [("v1", None), ("v2", True)]
    assert history(client, info.id) == ["created", "activated", "deactivated"]

    store.put_bytes("datasets/gen/v3/data.yaml", b"nc: 1\nnames: [person]\n")
    with pytest.raises(InvalidDataYaml) as exc_info:
        service.ensure_generated("gen", "v3")
    assert {p.field for p in exc_info.value.problems} == {"train", "val"}
    assert len(rows(client, pk)) == 2
