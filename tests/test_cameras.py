"""Several cameras (issue #15 item 2, docs/cameras.md): migration 0009, the cameras API, the
camera filter, two cameras producing their own events, and the shared batching detector."""

from __future__ import annotations

import sqlalchemy as sa

from detection_service import database
from schemas import db


def test_migration_0009_keeps_events_and_their_images(clean_database_url: str) -> None:
    """An install at 0008 with an event and its image: after 0009 the event is camera 1's and the
    image is still there (a SQLite table rebuild must not cascade into event_images)."""
    url = clean_database_url
    database.upgrade(url, "0008_event_uid")
    engine = database.make_engine(url)
    try:
        with engine.begin() as conn:
            type_id = conn.execute(sa.text("SELECT id FROM object_types WHERE code = 'person'")).scalar_one()
            conn.execute(
                sa.text("INSERT INTO detection_events (object_type_id, status, event_uid) VALUES (:t, 'ended', 'u1')"),
                {"t": type_id},
            )
            event_id = conn.execute(sa.text("SELECT id FROM detection_events WHERE event_uid = 'u1'")).scalar_one()
            conn.execute(
                sa.text("INSERT INTO event_images (event_id, image_path, sequence_number) VALUES (:e, 'k.jpg', 1)"),
                {"e": event_id},
            )
        database.upgrade(url)
        database.check(url)
        with engine.connect() as conn:
            assert conn.execute(sa.select(db.DetectionEvent.camera_id)).scalars().all() == [1]
            assert conn.execute(sa.select(sa.func.count()).select_from(db.EventImage)).scalar_one() == 1
            camera = conn.execute(sa.select(db.Camera.id, db.Camera.name, db.Camera.source)).one()
            assert tuple(camera) == (1, "default", None)
            if conn.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        with engine.begin() as conn:  # the FK holds: no events of an unknown camera
            try:
                conn.execute(
                    sa.text("INSERT INTO detection_events (object_type_id, camera_id) VALUES (:t, 99)"), {"t": type_id}
                )
            except sa.exc.IntegrityError:
                pass
            else:
                raise AssertionError("an event of camera 99 was accepted")
        database.downgrade(url, "0008_event_uid")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM event_images")).scalar_one() == 1
            assert conn.execute(sa.text("SELECT count(*) FROM detection_events")).scalar_one() == 1
        database.upgrade(url)
        database.check(url)
    finally:
        engine.dispose()
