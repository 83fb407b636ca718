"""The ``hub`` command: serve, worker, migrate, plugins, model, import, reindex, shops, eval."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from hub.settings import Settings, SettingsError, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"hub: invalid settings\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from hub import heap
    from hub.bootstrap import web_app
    from hub.logs import configure_logging
    from hub.metrics import serve_process_metrics

    heap.manage()
    settings = _settings()
    if "public_url" not in settings.model_fields_set:
        host = "127.0.0.1" if args.host in {"0.0.0.0", "::"} else args.host
        settings.public_url = f"http://{host}:{args.port}"
    configure_logging(settings.log_level, settings.log_format)
    app = web_app(settings, auto_migrate=settings.is_embedded_db)
    serve_process_metrics(settings.metrics_address)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        timeout_graceful_shutdown=20,
        proxy_headers=True,
        server_header=False,
    )


def cmd_migrate(_: argparse.Namespace) -> None:
    from hub.db.engine import migrate

    settings = _settings()
    asyncio.run(migrate(settings.db_url))
    print(f"database at {_safe_url(settings.db_url)} is up to date")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


async def _create_shop(settings: Settings, name: str, email: str) -> dict[str, Any]:
    from hub.bootstrap import build
    from hub.db.engine import migrate
    from hub.domain.shops import commit_new_shop, create_shop
    from hub.errors import HubError

    if settings.is_embedded_db:
        await migrate(settings.db_url)
    hub = build(settings, "cli")
    try:
        async with hub.services.sessions() as session:
            try:
                created = await create_shop(session, name, email)
                await commit_new_shop(session)
            except HubError as exc:
                raise SystemExit(f"hub: {exc.detail}") from None
            return {
                "id": created.shop.id,
                "name": created.shop.name,
                "email": created.shop.email,
                "secret_key": created.secret_key,
                "publishable_key": created.publishable_key,
            }
    finally:
        await hub.stop()


def cmd_shops_create(args: argparse.Namespace) -> None:
    shop = asyncio.run(_create_shop(_settings(), args.name, args.email))
    if args.json:
        print(json.dumps(shop))
        return
    print(f"Created shop {shop['id']} ({shop['name']}, {shop['email']}).")
    print("These keys are shown only once; store them now.")
    print(f"  secret key:      {shop['secret_key']}")
    print(f"  publishable key: {shop['publishable_key']}")


def cmd_worker(args: argparse.Namespace) -> None:
    from hub import heap
    from hub.worker.main import run_worker
    from hub.logs import configure_logging

    heap.manage()
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.broker_is_redis:
        raise SystemExit(
            "hub: `hub worker` needs a shared queue: set HUB_BROKER_URL=redis://host:6379/0 "
            "(with the embedded default, `hub serve` runs the workers itself)"
        )
    from hub.bootstrap import build
    from hub.metrics import serve_process_metrics
    from hub.search.priority import lower_this_thread

    lower_this_thread(settings.worker_nice)  # before any other thread starts: they all inherit it
    serve_process_metrics(settings.metrics_address)

    async def work() -> None:
        await run_worker(settings, build(settings, "worker"))

    asyncio.run(work())


def cmd_model_download(args: argparse.Namespace) -> None:
    from hub.search.encoder import download

    name = args.model or _settings().model
    path = download(name)
    print(f"model {name} is in the local cache: {path}")


def cmd_model_prepare(args: argparse.Namespace) -> None:
    from hub.search.encoder import Encoder, ModelUnavailable

    settings = _settings()
    name = args.model or settings.model
    encoder = Encoder(name, settings.device, settings.inference, settings.inference_threads, settings.home,
                      settings.inference_int8)
    try:
        encoder.text.get()
        encoder.vision.get()
    except ModelUnavailable as exc:
        raise SystemExit(f"hub: {exc}") from None
    for tower in ("text", "vision"):
        print(f"{tower} model: {encoder.runtimes[tower]}")
    if encoder.inference == "onnx":
        cached = [str(place) for place in encoder.export_places() if place.is_dir()]
        print(f"ONNX exports: {', '.join(cached) or 'none'}")
    if any("(" in runtime for runtime in encoder.runtimes.values()):
        raise SystemExit("hub: a tower does not run as HUB_INFERENCE asks (above); the log says why")


def cmd_model_init_test(args: argparse.Namespace) -> None:
    from pathlib import Path

    from hub.search.test_checkpoint import write_test_checkpoint

    folder = write_test_checkpoint(Path(args.dir), full_size=args.full_size, seed=args.seed)
    kind = "full-size ViT-B/32" if args.full_size else "small"
    print(f"wrote a {kind} randomly initialised CLIP checkpoint to {folder} (meaningless rankings)")
    print(f"use it with: HUB_MODEL={folder.resolve()}")


async def _import(settings: Settings, path: str, shop_id: int, as_json: bool) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from hub.bootstrap import build
    from hub.db.engine import migrate
    from hub.domain.imports import import_local
    from hub.domain.jobs import job_json
    from hub.errors import HubError
    from hub.plugin_manager import PluginError

    source = Path(path)
    if not source.exists():
        raise SystemExit(f"hub: {path} does not exist")
    if settings.is_embedded_db:
        await migrate(settings.db_url)
    try:
        hub = build(settings, "cli")
    except PluginError as exc:
        raise SystemExit(f"hub: {exc}") from None
    services = hub.services
    bar = tqdm(desc=f"importing {source.name}", unit="row", disable=as_json, file=sys.stderr, mininterval=0.2)

    def progress(job: Any) -> None:
        bar.total = job.total
        bar.n = job.done + job.failed
        bar.set_postfix(failed=job.failed, refresh=False)
        bar.refresh()

    try:
        job = await import_local(services, shop_id, source, progress)
    except HubError as exc:
        raise SystemExit(f"hub: {exc.detail}") from None
    finally:
        bar.close()
        await hub.stop()
    if as_json:
        print(json.dumps(job_json(job), default=str))
    else:
        created = job.result.get("created", 0)
        skipped = job.result.get("skipped: already imported", 0)
        print(f"job {job.id} {job.status}: {created} images imported, {skipped} already there, {job.failed} rows failed")
        for err in job.errors:
            where = f"line {err['line']}" if err.get("line") else err.get("item") or "?"
            print(f"  {where}: {err['error']}")
        if job.failed > len(job.errors):
            print(f"  … and {job.failed - len(job.errors)} more")
        if job.error:
            print(f"  the import stopped: {job.error}")
        if created:
            print("a running `hub serve` (or `hub worker`) embeds the new images within HUB_SWEEP_SECONDS")
    return 0 if job.status == "succeeded" and job.failed == 0 else 1


def cmd_import(args: argparse.Namespace) -> None:
    raise SystemExit(asyncio.run(_import(_settings(), args.path, args.shop, args.json)))


def _status_line(status: Any) -> str:
    jobs = ", ".join(f"{n} {state}" for state, n in sorted(status.jobs.items())) or "no jobs"
    missing = f", {status.missing} with images not built" if status.missing else ""
    if status.added:
        missing += f", {status.added} with images only since (embedded by the sweep once the model is active)"
    return (f"{status.name} ({status.key}): {status.progress}; {status.done:,} of {status.total:,} images embedded, "
            f"{status.failed:,} failed; {status.shops} shop(s) with images: {jobs}{missing}")


async def _reindex(settings: Settings, args: argparse.Namespace) -> int:
    from hub.bootstrap import build
    from hub.db.engine import migrate
    from hub.errors import HubError

    if settings.is_embedded_db:
        await migrate(settings.db_url)
    hub = build(settings, "cli")
    try:
        if args.forget:
            return await _forget(hub.services, args)
        if args.switch or args.rollback:
            return await _switch(hub.services, args)
        if args.model is None:
            return await _registry_status(settings, hub.services, args)
        return await _build(settings, hub.services, args)
    except HubError as exc:
        raise SystemExit(f"hub: {exc.detail}") from None
    finally:
        await hub.stop()


def _ref(ref: Any) -> dict[str, str] | None:
    return {"key": ref.key, "name": ref.name} if ref is not None else None


async def _registry_status(settings: Settings, services: Any, args: argparse.Namespace) -> int:
    from hub.domain.reindex import build_statuses
    from hub.domain.vector_models import read_registry
    from hub.search.encoder import model_key

    registry = await read_registry(services)
    found = await build_statuses(services)
    if args.json:
        print(json.dumps({"active": _ref(registry.active), "previous": _ref(registry.previous),
                          "builds": [{**status.__dict__, "progress": status.progress} for status in found],
                          "forgotten": list(registry.forgotten)}))
        return 0
    if registry.active is None:
        print(f"active: {settings.model} ({model_key(settings.model)}), HUB_MODEL (no process has started yet)")
    else:
        print(f"active: {registry.active.name} ({registry.active.key})")
    if registry.previous is not None:
        print(f"previous: {registry.previous.name} ({registry.previous.key}); hub reindex --rollback makes it active "
              "again")
    for status in found:
        print("building " + _status_line(status))
    for key in registry.forgotten:
        print(f"forgotten: {key}; a sweep drops its collections {settings.model_drop_delay:g} s after it was "
              "forgotten (HUB_MODEL_DROP_DELAY)")
    return 0


async def _forget(services: Any, args: argparse.Namespace) -> int:
    from hub.domain.vector_models import forget_model
    from hub.search.encoder import model_key

    known = await forget_model(services, args.forget) or await forget_model(services, model_key(args.forget))
    print(json.dumps({"forgotten": known}) if args.json else f"{args.forget}: " + (
        "forgotten; its collections are no longer kept current, and a sweep drops them HUB_MODEL_DROP_DELAY after "
        "this" if known
        else "not a registered model"))
    return 0 if known else 1


async def _switch(services: Any, args: argparse.Namespace) -> int:
    """``--switch M``: M must be built (every shop, no failure) unless ``--force``; ``--rollback``: the previous
    model, at once."""
    from hub.domain.reindex import build_statuses
    from hub.domain.vector_models import PREVIOUS, find_model, read_registry, roll_back, switch_to
    from hub.errors import Conflict
    from hub.search.encoder import model_key

    if args.rollback:
        done = await roll_back(services)
    else:
        row = await find_model(services, args.switch, model_key(args.switch))
        if row.state != PREVIOUS and not args.force:
            status = next(iter(await build_statuses(services, row.key)), None)
            if status is None or status.progress != "built":
                why = _status_line(status) if status is not None else "it was never built"
                raise Conflict(f"{row.name} is not built ({why}); build it again (hub reindex --model), or switch "
                               "with --force: the sweep then embeds what it misses, and those images are not found "
                               "until it has")
        here = model_key(row.name)
        if here != row.key:
            if not args.force:
                raise Conflict(f"{row.name}'s files here are not those it was built from ({here}, "
                               f"not {row.key}): processes with these files would not switch to it. Put the built "
                               "files back, or switch with --force where this host is not one that serves")
            print(f"hub: {row.name}'s files here are not those it was built from; only processes that have the "
                  "built files switch", file=sys.stderr)
        done = await switch_to(services, row.key)
    registry = await read_registry(services)
    if args.json:
        print(json.dumps({"active": _ref(done.active), "previous": _ref(done.previous),
                          "forgotten": _ref(done.forgotten), "kept": list(registry.kept)}))
        return 0
    print(f"active: {done.active.name} ({done.active.key}); every process serves it within a few seconds of having "
          "loaded it (its /ready warns while it loads)")
    if done.previous is not None:
        print(f"previous: {done.previous.name}: its collections stay current; hub reindex --rollback returns to it")
    if done.forgotten is not None:
        print(f"forgotten: {done.forgotten.name}, previous before; a sweep drops its collections "
              "HUB_MODEL_DROP_DELAY after this")
    return 0


async def _build(settings: Settings, services: Any, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hub.domain.reindex import build_statuses, jobs_progress, start_build
    from hub.search.encoder import model_key

    key = model_key(args.model)
    job_ids = await start_build(services, args.model, key, model_key(settings.model), args.shop)
    if not args.json:
        print(f"building {args.model} ({key}) for {len(job_ids)} shop(s); a running `hub serve` (or `hub "
              "worker`) does the work")
    if args.no_wait:
        return 0
    bar = tqdm(desc=f"reindexing for {args.model}", unit="image", disable=args.json, file=sys.stderr,
               mininterval=0.5)
    while True:
        done, failed, total, jobs = await jobs_progress(services, job_ids)
        bar.total, bar.n = total, done + failed
        bar.set_postfix(failed=failed, refresh=False)
        bar.refresh()
        if jobs.get("queued", 0) + jobs.get("running", 0) == 0:
            break
        await asyncio.sleep(1)
    bar.close()
    status = (await build_statuses(services, key))[0]
    ours_ok = jobs.get("succeeded", 0) == len(job_ids) and failed == 0
    if args.json:
        print(json.dumps({**status.__dict__, "progress": status.progress,
                          "these_jobs": {"done": done, "failed": failed, "total": total, "jobs": jobs}}))
    else:
        print(_status_line(status))
        if status.progress == "built":
            print(f"to serve it: hub reindex --switch {args.model} (no restart; --rollback returns)")
    return 0 if ours_ok else 1


def cmd_reindex(args: argparse.Namespace) -> None:
    raise SystemExit(asyncio.run(_reindex(_settings(), args)))


async def _eval(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from hub.bootstrap import build
    from hub.db.models import Shop
    from hub.domain.evaluation import as_json, evaluate, read_judgements, table
    from hub.errors import HubError
    from hub.plugin_manager import PluginError

    path = Path(args.path)
    if not path.is_file():
        raise SystemExit(f"hub: {args.path} is not a file")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"vector", "lexical", "hybrid"}:
        raise SystemExit("hub: --modes takes vector, lexical and hybrid, separated by commas")
    try:
        weights = [float(w) for w in args.weights.split(",") if w.strip()]
    except ValueError:
        raise SystemExit("hub: --weights takes numbers between 0 and 1, separated by commas") from None
    if not weights or any(not 0 <= w <= 1 for w in weights):
        raise SystemExit("hub: --weights takes numbers between 0 and 1, separated by commas")
    configurations = [(m, w) for m in modes for w in (weights if m == "hybrid" else [None])]
    try:
        judgements = read_judgements(path.read_text(encoding="utf-8").splitlines())
        hub = build(settings, "api")  # the encoder and the vector store, without serving anything
    except HubError as exc:
        raise SystemExit(f"hub: {path.name}: {exc.detail}") from None
    except (PluginError, UnicodeDecodeError) as exc:
        raise SystemExit(f"hub: {exc}") from None
    try:
        async with hub.services.sessions() as session:
            if await session.get(Shop, args.shop) is None:
                raise SystemExit(f"hub: shop {args.shop} not found")
        results = await evaluate(hub.services, args.shop, judgements, configurations, args.k)  # type: ignore[arg-type]
    except HubError as exc:
        raise SystemExit(f"hub: {exc.detail}") from None
    finally:
        await hub.stop()
    if args.json:
        print(json.dumps(as_json(results, args.k)))
    else:
        print(table(results, args.k))
    return 0


def cmd_eval(args: argparse.Namespace) -> None:
    raise SystemExit(asyncio.run(_eval(_settings(), args)))


def cmd_plugins(args: argparse.Namespace) -> None:
    from hub.plugin_manager import PluginError, load_plugins

    settings = _settings()
    try:
        plugins = load_plugins(settings.disabled_plugin_names)
    except PluginError as exc:
        raise SystemExit(f"hub: {exc}") from None
    if args.json:
        print(json.dumps({"plugins": plugins.loaded, "disabled": plugins.disabled}))
        return
    if not plugins.loaded:
        print("no plugins installed")
    for p in plugins.loaded:
        provides = "  ".join(f"{kind}: {', '.join(p[kind]) or '-'}" for kind in ("connectors", "importers"))
        print(f"{p['name']:<20} {p['package'] or '-'} {p['version'] or ''}  {provides}")
    for name in plugins.disabled:
        print(f"{name:<20} disabled by HUB_DISABLED_PLUGINS")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Fashion Hub: FashionCLIP product recommendations.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (and, embedded, the workers)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("worker", help="run the workers: embedding, webhooks, syncs, imports (server mode)").set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    plugins = sub.add_parser("plugins", help="list the installed plugins and their connectors")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    model = sub.add_parser("model", help="the FashionCLIP model").add_subparsers(dest="model_command", required=True)
    download = model.add_parser("download", help="fetch the model into the local cache ahead of time")
    download.add_argument("model", nargs="?", help="Hugging Face id (default: HUB_MODEL)")
    download.set_defaults(func=cmd_model_download)
    prepare = model.add_parser("prepare", help="load both towers once (exporting them to ONNX if HUB_INFERENCE "
                               "uses it) and say what runs them")
    prepare.add_argument("model", nargs="?", help="Hugging Face id or folder (default: HUB_MODEL)")
    prepare.set_defaults(func=cmd_model_prepare)
    init_test = model.add_parser("init-test", help="write a randomly initialised CLIP checkpoint (tests, smoke runs)")
    init_test.add_argument("dir")
    init_test.add_argument("--full-size", action="store_true", help="the real ViT-B/32 architecture (benchmarks)")
    init_test.add_argument("--seed", type=int, default=0)
    init_test.set_defaults(func=cmd_model_init_test)

    bulk = sub.add_parser("import", help="bulk-import a ZIP, a folder, or a CSV/JSON manifest into a shop")
    bulk.add_argument("path", help="a .zip, a folder of images (optional manifest.csv/json), or a .csv/.json list")
    bulk.add_argument("--shop", type=int, required=True, help="the shop's id")
    bulk.add_argument("--json", action="store_true", help="print the finished job as JSON (no progress bar)")
    bulk.set_defaults(func=cmd_import)

    reindex = sub.add_parser("reindex", help="embed every shop's images with another model beside the active one, "
                             "then switch to it with no restart (and back); alone: the active model and each build")
    action = reindex.add_mutually_exclusive_group()
    action.add_argument("--model", help="Hugging Face id or checkpoint folder to build")
    action.add_argument("--switch", metavar="MODEL", help="make a built model the active one in every process (a "
                        "key, an id or a folder); the active one becomes the previous one")
    action.add_argument("--rollback", action="store_true", help="make the previous model active again")
    action.add_argument("--forget", metavar="MODEL", help="stop keeping a model's collections current and drop "
                        "them (a key, an id or a folder; not the active model)")
    reindex.add_argument("--shop", type=int, help="with --model: build this shop only")
    reindex.add_argument("--no-wait", action="store_true", help="with --model: queue the build and return")
    reindex.add_argument("--force", action="store_true", help="with --switch: even if the build is not complete")
    reindex.add_argument("--json", action="store_true", help="print JSON (no progress bar)")
    reindex.set_defaults(func=cmd_reindex)

    judge = sub.add_parser("eval", help="score each ranking mode and weight against a shop's judged queries")
    judge.add_argument("path", help='JSON lines: {"query": "...", "relevant": [product ids], "relevant_images": [...]}')
    judge.add_argument("--shop", type=int, required=True, help="the shop's id")
    judge.add_argument("--modes", default="vector,lexical,hybrid", help="comma-separated (default: all three)")
    judge.add_argument("--weights", default="0.25,0.5,0.75", help="hybrid's lexical weights to compare")
    judge.add_argument("--k", type=int, default=10, choices=range(1, 101), metavar="K", help="recall@K (1-100)")
    judge.add_argument("--json", action="store_true", help="print JSON instead of a table")
    judge.set_defaults(func=cmd_eval)

    shops = sub.add_parser("shops", help="manage shops").add_subparsers(dest="shops_command", required=True)
    create = shops.add_parser("create", help="create a shop and print its keys once")
    create.add_argument("--name", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(func=cmd_shops_create)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    func(args)
