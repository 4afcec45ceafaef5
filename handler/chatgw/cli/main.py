"""`chatgw`: serve the gateway locally, run Lambda events through it, and manage keys and usage."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatgw import __version__
from chatgw.access.keys import new_key
from chatgw.access.peppers import Peppers
from chatgw.cli import admin
from chatgw.settings import Settings, private_dir
from chatgw.store.base import Store

if TYPE_CHECKING:
    from chatgw.compose import Container

DEV_KEY_FILE = "dev-key"
PLACEHOLDER = "CHATGW_DEV_KEY"
EVENT_MARKERS = ("httpMethod", "requestContext", "routeKey")
"""An API Gateway REST (v1), HTTP API (v2) or function URL event has at least one of these."""
DEV_KEY_HELP = "on DynamoDB, create a development key (every model, no limits) if this folder has none for it"


def dev_key_path(store: Store, state_dir: Path) -> Path:
    """The state folder's dev-key file of this store: `dev-key` for its own SQLite store,
    `dev-key.<keys table>` for a DynamoDB one, so that one store's key never replaces another's."""
    table = getattr(store, "keys_table", None)  # DynamoStore names its table; SqliteStore has none
    return state_dir / (f"{DEV_KEY_FILE}.{table}" if table else DEV_KEY_FILE)


def dev_key(store: Store, state_dir: Path, peppers: Peppers, *, create: bool = True) -> tuple[str | None, bool]:
    """The development key of a state folder and store: (key, created now); (None, False) when there
    is none and `create` is off. Made on first use, mode 0600."""
    path = dev_key_path(store, state_dir)
    if path.exists():
        key = path.read_text().strip()
        parts = key.split("_")
        if len(parts) == 3 and store.get_key(parts[1]) is not None:
            return key, False
    if not create:
        return None, False
    pepper, stamp = peppers.for_new_key()
    key, record = new_key(
        "development",
        pepper=pepper,
        **stamp,
        owner="chatgw serve",
        tags={"purpose": "development"},
    )
    store.create_key(record)
    private_dir(state_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return key, True


def _dev_key(args: argparse.Namespace, settings: Settings, container: Container) -> tuple[str | None, bool]:
    """Into the local SQLite store always; into DynamoDB only when asked (--dev-key)."""
    store = container.store
    create = bool(getattr(args, "dev_key", False)) or getattr(store, "keys_table", None) is None
    return dev_key(store, settings.state_dir, container.service.peppers.peppers, create=create)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if getattr(args, "state_dir", None):
        settings = replace(settings, state_dir=Path(args.state_dir))
    return settings


def _build(args: argparse.Namespace, **overrides: Any) -> tuple[Settings, Container]:
    """Settings and container, with the store the options name (the same options as `chatgw keys`)."""
    from chatgw.access.peppers import PepperBook
    from chatgw.cli.peppers import pepper_source
    from chatgw.compose import build

    sinks = overrides.pop("sinks", None)
    settings = replace(_settings(args), **overrides)
    peppers = PepperBook(pepper_source(args, settings, create=True))
    return settings, build(settings, store=admin.open_store(args, settings), sinks=sinks, peppers=peppers)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        print("chatgw serve needs uvicorn: pip install 'chatgw[local]'", file=sys.stderr)
        return 2
    listening = listen(args.host, args.port)  # before anything is printed: a taken port is the one message
    sinks: list[Any] = []
    if args.metrics:
        from chatgw.observability.prometheus import MetricsEndpoint, PrometheusSink

        sinks.append(PrometheusSink())
    settings, container = _build(args, sinks=sinks)
    if sinks:
        from chatgw.observability.prometheus import exposure_warning, metrics_token

        token, token_file = metrics_token(settings.metrics_token, settings.state_dir)
        endpoint = MetricsEndpoint(sinks[0], token)  # an ASGI app: Starlette routes to it as it is
        container.app.add_route("/metrics", endpoint, methods=["GET"])  # type: ignore[arg-type]
        if warning := exposure_warning(args.host):
            print(warning, file=sys.stderr, flush=True)
    store = container.store
    key, created = _dev_key(args, settings, container)
    base = f"http://{args.host}:{args.port}"
    models = ", ".join(e.name for e in container.catalog.entries())
    print(f"chatgw serving on {base}  (OpenAI base_url: {base}/v2/llms)", flush=True)
    print(f"models: {models}", flush=True)
    path = dev_key_path(store, settings.state_dir)
    if sinks:
        where = f"token in {token_file}" if token_file else "token: CHATGW_METRICS_TOKEN"
        print(f"metrics (Prometheus text format): {base}/metrics  (Authorization: Bearer; {where})", flush=True)
    if created:
        print(f"development key (shown once, saved in {path}):\n  {key}", flush=True)
    elif key:
        print(f"development key: in {path}", flush=True)
    else:
        print("no development key: the store is DynamoDB (pass --dev-key to create one there)", flush=True)
    from chatgw.cli.server import uvicorn_options

    config = uvicorn.Config(container.app, host=args.host, port=args.port, **uvicorn_options())
    uvicorn.Server(config).run(sockets=[listening])
    return 0


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound now, so that a port in use is reported before anything else.

    Made with the protocol getaddrinfo names (IPPROTO_TCP), not 0: asyncio sets TCP_NODELAY only on
    connections whose socket says TCP, and without it a keep-alive connection's response, written in
    two parts (headers, body), waited for the client's delayed ACK: 40 ms per request."""
    try:
        family, kind, proto, _, _ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise admin.CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", code=1) from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise admin.CliError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another port: --port N, make run PORT=N)"
        ) from None
    sock.set_inheritable(True)
    return sock


class LocalContext:
    """The Lambda context object, for events run locally."""

    def __init__(self, timeout_s: float = 900.0) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "chatgw-local"
        self.function_version = "$LATEST"
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:chatgw-local"
        self.memory_limit_in_mb = 1024
        self.log_group_name = "/aws/lambda/chatgw-local"
        self.log_stream_name = "local"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_event(path: str, key: str) -> dict[str, Any]:
    text = Path(path).read_text()
    try:
        event = json.loads(text.replace(PLACEHOLDER, key))
    except json.JSONDecodeError as exc:
        raise admin.CliError(f"{path}: not JSON ({exc})", code=2) from None
    if not isinstance(event, dict) or not any(k in event for k in EVENT_MARKERS):
        raise admin.CliError(f"{path}: not an API Gateway (REST or HTTP API) or function URL event", code=2)
    return event


def cmd_invoke(args: argparse.Namespace) -> int:
    load_event(args.event, PLACEHOLDER)  # a bad event is the one message, before anything is built
    admin.existing_state_dir(args)  # a typo in --state-dir creates no store (serve is the one that does)
    settings, container = _build(args, metrics="emf")  # the EMF lines the function writes in Lambda
    store = container.store
    key, _ = _dev_key(args, settings, container)
    if key is None:
        store.close()
        raise admin.CliError("no development key for this DynamoDB store: pass --dev-key to create one", code=2)
    event = load_event(args.event, key)
    if args.stream:
        from chatgw.aws_lambda.stream_runtime import run_local

        def write(line: str) -> None:
            sys.stdout.write(line)
            sys.stdout.flush()

        try:
            return run_local(event, write, factory=lambda: container.app)
        finally:
            container.store.close()
    from mangum import Mangum

    context: Any = LocalContext()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        response = Mangum(container.app, lifespan="off")(event, context)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
        container.store.close()
    print(json.dumps(response, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="chatgw", description=__doc__)
    root.add_argument("--version", action="version", version=f"chatgw {__version__}")
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway locally (uvicorn, embedded store)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--dev-key", action="store_true", help=DEV_KEY_HELP)
    serve.add_argument("--metrics", action="store_true", help="serve Prometheus metrics at /metrics")
    admin.add_store_options(serve)
    serve.set_defaults(func=cmd_serve)

    invoke = sub.add_parser("invoke", help="run a Lambda event through the handler, no Docker")
    invoke.add_argument("event", help="an API Gateway / function URL event JSON file")
    invoke.add_argument("--stream", action="store_true", help="through the response-streaming runtime")
    invoke.add_argument("--dev-key", action="store_true", help=DEV_KEY_HELP)
    admin.add_store_options(invoke)
    invoke.set_defaults(func=cmd_invoke)

    admin.register(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return admin.quiet_pipe(admin.guarded(args.func), args)


if __name__ == "__main__":
    sys.exit(main())
