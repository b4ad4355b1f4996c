"""`aidoor` command line: serve, run, migrate, dagster-home, camera, demo-video, bench, ..."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from detection_service.config import ConfigError, Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from detection_service.database import upgrade

    try:
        settings.check_auth_bind(args.host or settings.host)
    except ConfigError as exc:
        print(f"aidoor: {exc}", file=sys.stderr)
        return 2
    workers = args.workers or 1
    if workers < 1:
        print("aidoor: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1 and settings.live_broker is None:
        # Each worker would run its own pipeline on the same camera (docs/deployment.md).
        print(
            "aidoor: --workers > 1 needs the detector in its own process: set AIDOOR_LIVE_BROKER_URL "
            "(e.g. mqtt://127.0.0.1:1883/aidoor) and run `aidoor detect`; the in-process pipeline "
            "cannot be shared by several API workers",
            file=sys.stderr,
        )
        return 2
    if not args.no_migrate:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database_url)
    uvicorn.run(
        "detection_service.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level.lower(),
        workers=workers,
        # Open MJPEG viewers never finish by themselves: in-flight requests get 3 s at shutdown.
        timeout_graceful_shutdown=3,
    )
    return 0


def _detect(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from detection_service.database import upgrade

    cameras = [c.strip() for c in (args.cameras or "default").split(",") if c.strip()]
    if settings.live_broker is None:
        print("aidoor: aidoor detect needs AIDOOR_LIVE_BROKER_URL (the broker the API uses)", file=sys.stderr)
        return 2
    if not args.no_migrate:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database_url)
    from detection_service.detect_worker import DetectorWorker

    try:
        worker = DetectorWorker(settings, demo_policy=args.demo, cameras=cameras, name=args.name)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        worker.start()  # refuses a camera another online worker runs
    except ConfigError as exc:
        print(f"aidoor detect: {exc}", file=sys.stderr)
        return 2
    stop.wait()
    worker.close()
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from detection_service.supervisor import run_all

    return run_all(settings, with_dagster=not args.no_dagster, bootstrap=not args.no_bootstrap)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from detection_service import database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if args.check:
        database.check(settings.database_url)
        print("schema matches the models (no drift)")
    elif args.downgrade:
        database.downgrade(settings.database_url, args.downgrade)
    else:
        database.upgrade(settings.database_url, args.revision)
    print(f"database at revision {database.current_revision(settings.database_url)}")
    return 0


def _dagster_home(args: argparse.Namespace, settings: Settings) -> int:
    from orchestration.instance import ensure_local_instance

    print(ensure_local_instance(settings.dagster_home).parent)
    return 0


def _bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from detection_service.bootstrap import bootstrap_exports, run_bootstrap
    from detection_service.database import upgrade

    exports = [Path(p) for p in args.export] if args.export else bootstrap_exports(settings)
    for export_dir in exports:
        if not (export_dir / "data.yaml").exists():
            print(f"aidoor: {export_dir} is not a YOLO export (no data.yaml)", file=sys.stderr)
            return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    model_id = run_bootstrap(settings, exports, profile=args.profile, epochs=args.epochs)
    print(f"==> deployed model {model_id}")
    return 0


def _model_service(settings: Settings):
    from detection_service.dagster_client import DagsterClient
    from detection_service.database import make_engine, make_session_factory, upgrade
    from detection_service.ml.ultralytics_env import configure_offline
    from detection_service.services.job_queue import JobService
    from detection_service.services.models import ModelService
    from detection_service.storage import make_object_store

    configure_offline(settings.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    session_factory = make_session_factory(make_engine(settings.database_url))
    store = make_object_store(settings)
    store.ensure_bucket()
    return ModelService(
        session_factory,
        store,
        JobService(session_factory),
        DagsterClient(settings.dagster_url),
        settings.data_dir / "cache",
    )


def _model(args: argparse.Namespace, settings: Settings) -> int:
    import msgspec

    from detection_service.errors import DomainError

    service = _model_service(settings)
    try:
        if args.model_command == "register":
            info = service.register_file(Path(args.file), args.name)
            print(
                f"registered {info.model_id} ({info.model_size} bytes); its evaluation on the fixed set is "
                f"queued (see `GET /api/models/{info.model_id}/info`, gate); deploy with "
                f"`curl -X POST {settings.public_url}/api/models/{info.model_id}/deploy`"
            )
        elif args.model_command == "pull":
            print(service.pull(args.model, Path(args.file)))
        else:
            for info in service.versions():
                print(
                    msgspec.json.encode(
                        {
                            k: getattr(info, k)
                            for k in ("model_id", "status", "is_current", "accuracy", "map50_95", "inference_ms")
                        }
                    ).decode()
                )
    except DomainError as exc:
        print(f"aidoor: {exc.message}", file=sys.stderr)
        return 1
    return 0


# `aidoor bench NAME` runs detection_service/bench/NAME.py's main(); True where it takes the Settings.
BENCHMARKS: dict[str, bool] = {
    "train": True,
    "pipeline": True,
    "api": True,
    "notify": False,
    "retrain": False,
    "events": True,
    "analytics": True,
    "overhead": True,
    "visitors": True,
    "faults": False,
    "cameras": True,
}


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    import importlib

    main = importlib.import_module(f"detection_service.bench.{args.bench_command}").main
    return main(args.rest, settings) if BENCHMARKS[args.bench_command] else main(args.rest)


def _camera(args: argparse.Namespace, settings: Settings) -> int:
    from detection_service import camera_client

    url = args.to or settings.public_url.replace("http", "ws", 1) + "/api/stream/ingest"
    if args.camera is not None:  # that camera's ingest (docs/cameras.md)
        url += ("&" if "?" in url else "?") + f"camera={args.camera}"
    code, stats = camera_client.run(
        args.source,
        url,
        fps=args.fps,
        quality=args.quality,
        width=args.width,
        loop=args.loop,
        reconnects=args.reconnects,
        max_frames=args.frames,
        camera_name=args.name,
        token=args.token or settings.camera_token,
        on_status=lambda text: print(f"aidoor camera: {text}", file=sys.stderr, flush=True),
    )
    print(
        f"aidoor camera: {stats.frames_sent} frame(s), {stats.bytes_sent} bytes, {stats.connections} connection(s)",
        file=sys.stderr,
    )
    return code


def _auth_service(settings: Settings):
    from detection_service.database import make_engine, make_session_factory, upgrade
    from detection_service.services.auth import AuthService

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    return AuthService(make_session_factory(make_engine(settings.database_url)))


def _user(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from detection_service.errors import DomainError

    service = _auth_service(settings)
    try:
        if args.user_command == "list":
            for user in service.users():
                print(f"{user.id}\t{user.username}\t{user.role}\t{'active' if user.is_active else 'inactive'}")
            return 0
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("password: ")
            if getpass.getpass("again: ") != password:
                print("aidoor: the passwords differ", file=sys.stderr)
                return 1
        if args.user_command == "create":
            info = service.create_user(args.username, password, args.role, created_by="cli")
            print(f"user {info.username} ({info.role}) created; sign in at {settings.public_url}/login")
        else:
            info = service.reset_password(args.username, password, updated_by="cli")
            print(f"password of {info.username} set; its sessions ended")
    except DomainError as exc:
        print(f"aidoor: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from detection_service.errors import DomainError

    service = _auth_service(settings)
    try:
        if args.token_command == "create":
            new = service.create_token(args.role, args.name, created_by="cli", camera_id=args.camera)
            print(new.token)  # the only line on stdout: scripts capture it
            print(
                f"aidoor: token {new.info.id} ({new.info.name}, {new.info.role}) created; it is shown only now. "
                "Send it as 'Authorization: Bearer <token>'.",
                file=sys.stderr,
            )
        elif args.token_command == "revoke":
            info = service.revoke_token(args.id)
            print(f"token {info.id} ({info.name}, {info.role}) revoked")
        else:
            for token in service.tokens():
                state = "revoked" if token.revoked_at else "active"
                used = token.last_used_at.isoformat() if token.last_used_at else "never used"
                print(f"{token.id}\t{token.prefix}...\t{token.role}\t{token.name}\t{state}\t{used}")
    except DomainError as exc:
        print(f"aidoor: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _demo_video(args: argparse.Namespace, settings: Settings) -> int:
    from detection_service import demo_video

    return demo_video.main(args, settings.data_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aidoor", description="ai-door-system command line")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the detection service (HTTP API) only")
    serve.add_argument("--host", help="bind address (default AIDOOR_HOST)")
    serve.add_argument("--port", type=int, help="port (default AIDOOR_PORT)")
    serve.add_argument("--no-migrate", action="store_true", help="skip `alembic upgrade head` at start")
    serve.add_argument(
        "--workers", type=int, help="API worker processes (default 1; more need AIDOOR_LIVE_BROKER_URL + aidoor detect)"
    )
    serve.set_defaults(func=_serve)

    detect = sub.add_parser(
        "detect", help="run the realtime pipeline alone, serving the API over AIDOOR_LIVE_BROKER_URL (no HTTP)"
    )
    detect.add_argument(
        "--cameras",
        help="the cameras this worker runs: ids or names of the cameras table, comma-separated (e.g. 1,2 or 3); "
        "'default' (the default): every camera. Each camera may be run by one worker only",
    )
    detect.add_argument("--name", help="this worker's name on the live link (default: 'default' or cameras-<ids>)")
    detect.add_argument("--no-migrate", action="store_true", help="skip `alembic upgrade head` at start")
    detect.add_argument(
        "--demo", help="demo video policy: '' (play if built), auto (build when missing), off, or a video path"
    )
    detect.set_defaults(func=_detect)

    run = sub.add_parser("run", help="migrate, then run the service and Dagster (webserver + daemon) together")
    run.add_argument("--no-dagster", action="store_true", help="run the detection service only")
    run.add_argument("--no-bootstrap", action="store_true", help="do not train a starter model when none exists")
    run.set_defaults(func=_run)

    migrate = sub.add_parser("migrate", help="apply database migrations (default: to head)")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION (e.g. base)")
    migrate.add_argument("--check", action="store_true", help="fail if the models and the schema differ")
    migrate.set_defaults(func=_migrate)

    boot = sub.add_parser("bootstrap-model", help="import a starter dataset, train, evaluate and deploy a model")
    boot.add_argument(
        "export",
        nargs="*",
        help="YOLO export folders, the first the main one, the others "
        "mixed in (default: AIDOOR_BOOTSTRAP_DATASET or the doorbell parcels + person photos in "
        "../shared/datasets)",
    )
    boot.add_argument("--profile", default="default", choices=["default", "tiny"])
    boot.add_argument("--epochs", type=int, help="override the profile's epochs")
    boot.set_defaults(func=_bootstrap)

    model = sub.add_parser("model", help="registered models: list, register a weights file, pull weights")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    model_sub.add_parser("list", help="registered models, newest first")
    register = model_sub.add_parser(
        "register",
        help="register an Ultralytics .pt or *_openvino_model folder trained "
        "elsewhere; it is then evaluated on the fixed evaluation set (in Dagster)",
    )
    register.add_argument("file")
    register.add_argument("--name")
    pull = model_sub.add_parser("pull", help="write a model's weights file (`current` or a model id)")
    pull.add_argument("model")
    pull.add_argument("file")
    model.set_defaults(func=_model)

    bench = sub.add_parser("bench", help="benchmarks that print one JSON line")
    bench.add_argument("bench_command", choices=list(BENCHMARKS))
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the benchmark")
    bench.set_defaults(func=_bench)

    camera = sub.add_parser("camera", help="push a camera's frames (JPEG) to the service's WebSocket ingest")
    camera.add_argument("--source", required=True, help="device index, RTSP/HTTP URL or video file (cv2.VideoCapture)")
    camera.add_argument("--to", help="ingest URL (default ws://<AIDOOR_PUBLIC_URL host>/api/stream/ingest)")
    camera.add_argument("--fps", type=float, default=15.0, help="most frames per second to send (default 15)")
    camera.add_argument("--quality", type=int, default=80, help="JPEG quality 1-100 (default 80)")
    camera.add_argument("--width", type=int, default=0, help="downscale frames wider than this (0: keep)")
    camera.add_argument("--loop", action="store_true", help="play a video file in a loop")
    camera.add_argument("--reconnects", type=int, default=10, help="consecutive reconnect attempts (default 10)")
    camera.add_argument("--frames", type=int, help="stop after sending this many frames")
    camera.add_argument("--name", help="camera name shown in /api/stream/status")
    camera.add_argument("--camera", type=int, help="camera id whose source is 'push' (default: camera 1)")
    camera.add_argument("--token", help="API token with the camera role (default AIDOOR_CAMERA_TOKEN)")
    camera.set_defaults(func=_camera)

    demo = sub.add_parser("demo-video", help="build the demo door-camera video from ../shared/datasets")
    demo.add_argument("--out", help="output file (default <data dir>/demo/door-demo.mp4, used when no camera is set)")
    demo.add_argument(
        "--dataset", help="doorbell-camera-alert export (default ../shared/datasets/doorbell-camera-alert-v4)"
    )
    demo.add_argument("--fps", type=float, default=15.0)
    demo.add_argument("--scenes", type=int, default=2, help="parcel scenes, ~26 s each (default 2)")
    demo.add_argument(
        "--person-scenes", type=int, default=1, help="person scenes, ~15 s each, between the parcel scenes (default 1)"
    )
    demo.add_argument("--frames", type=int, help="shorten to about this many frames (tests)")
    demo.set_defaults(func=_demo_video)

    user = sub.add_parser("user", help="dashboard accounts: create, set a password, list (docs/security.md)")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    create = user_sub.add_parser("create", help="create an account (asks for the password)")
    create.add_argument("--username", required=True)
    create.add_argument("--role", choices=["viewer", "user", "admin"], default="viewer")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    passwd = user_sub.add_parser("password", help="set an account's password (no current one needed)")
    passwd.add_argument("--username", required=True)
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    user_sub.add_parser("list", help="accounts")
    user.set_defaults(func=_user)

    token = sub.add_parser("token", help="API tokens for scripts and cameras: create, revoke, list")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    token_create = token_sub.add_parser("create", help="print a new token once (stdout)")
    token_create.add_argument("--role", required=True, choices=["viewer", "user", "admin", "camera"])
    token_create.add_argument("--name", help="what it is for (default '<role> token')")
    token_create.add_argument(
        "--camera", type=int, help="camera tokens: only this camera's WebSocket ingest (default: every camera)"
    )
    token_revoke = token_sub.add_parser("revoke", help="revoke a token by id (see `aidoor token list`)")
    token_revoke.add_argument("id", type=int)
    token_sub.add_parser("list", help="tokens (never the tokens themselves)")
    token.set_defaults(func=_token)

    home = sub.add_parser("dagster-home", help="write the local Dagster instance config and print DAGSTER_HOME")
    home.set_defaults(func=_dagster_home)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"aidoor: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health probe is noise
    return args.func(args, settings)


if __name__ == "__main__":
    sys.exit(main())
