"""`aidoor` command line: serve, run, migrate, dagster-home."""

from __future__ import annotations

import argparse
import logging
import sys

from detection_service.config import ConfigError, Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from detection_service.database import upgrade

    if not args.no_migrate:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database_url)
    uvicorn.run(
        "detection_service.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level.lower(),
    )
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from detection_service.runner import run_all

    return run_all(settings, with_dagster=not args.no_dagster)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aidoor", description="ai-door-system command line")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the detection service (HTTP API) only")
    serve.add_argument("--host", help="bind address (default AIDOOR_HOST)")
    serve.add_argument("--port", type=int, help="port (default AIDOOR_PORT)")
    serve.add_argument("--no-migrate", action="store_true", help="skip `alembic upgrade head` at start")
    serve.set_defaults(func=_serve)

    run = sub.add_parser("run", help="migrate, then run the service and Dagster (webserver + daemon) together")
    run.add_argument("--no-dagster", action="store_true", help="run the detection service only")
    run.set_defaults(func=_run)

    migrate = sub.add_parser("migrate", help="apply database migrations (default: to head)")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION (e.g. base)")
    migrate.add_argument("--check", action="store_true", help="fail if the models and the schema differ")
    migrate.set_defaults(func=_migrate)

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
    return args.func(args, settings)


if __name__ == "__main__":
    sys.exit(main())
