"""The fault suite, short (issue #14 item 5; ``aidoor bench faults`` runs the long one): a scripted door
scene through the real recorder, writer, journal and notifier in a worker process, against MariaDB
behind a TCP proxy and the fake Bot API, while the database is cut, the store fails, Telegram answers
429 and 500, the camera drops and the worker is killed with SIGKILL and restarted. Nothing may be
lost, duplicated or orphaned. Needs MariaDB at 127.0.0.1:3306 (skipped without it; the database
fault needs a TCP server to cut)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from detection_service.bench.faults import run_fault, scene
from detection_service.bench.tcp_proxy import TcpProxy

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


@pytest.mark.parametrize("fault", ["sigkill", "all"])
def test_nothing_is_lost_duplicated_or_orphaned(fault: str, tmp_path: Path, offline_dir) -> None:
    seconds = 30.0
    result = run_fault(fault, URL, seconds, tmp_path)
    assert result.expected == len(scene(seconds)) == 4
    assert (result.lost, result.duplicated, result.orphaned) == (0, 0, 0), result
    assert result.events == result.expected and result.images_lost == 0 and result.images_expected == 12
    assert result.alerts >= result.expected and result.alerts_duplicated == 0 and result.journal_left == 0
    # Every alert went out once, through 429s and 500s in the all-together run.
    assert result.alerts_unsent == 0 and result.telegram_duplicated == 0
    if fault == "all":
        assert result.telegram_refused >= 1
    # The faults did bite: the killed worker left writes that the restarted one replayed.
    assert result.restarts == 1 and result.replayed >= 1 and result.retries >= 1
