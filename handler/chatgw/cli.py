"""`chatgw`: serve the gateway locally, run Lambda events through it, and manage keys and usage."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, admin
from .keys import new_key
from .settings import Settings
from .store.base import Store

if TYPE_CHECKING:
    from .compose import Container

DEV_KEY_FILE = "dev-key"
PLACEHOLDER = "CHATGW_DEV_KEY"


def dev_key(store: Store, state_dir: Path, pepper: bytes) -> tuple[str, bool]:
    """The development key of a state folder: (key, created now). Made on first use, mode 0600."""
    path = state_dir / DEV_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        parts = key.split("_")
        if len(parts) == 3 and store.get_key(parts[1]) is not None:
            return key, False
    key, record = new_key("development", pepper=pepper, owner="chatgw serve", tags={"purpose": "development"})
    store.create_key(record)
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return key, True


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if getattr(args, "state_dir", None):
        settings = replace(settings, state_dir=Path(args.state_dir))
    return settings


def _build(args: argparse.Namespace, **overrides: Any) -> tuple[Settings, Container]:
    """Settings and container, with the store the options name (the same options as `chatgw keys`)."""
    from .compose import build

    sinks = overrides.pop("sinks", None)
    settings = replace(_settings(args), **overrides)
    return settings, build(settings, store=admin.open_store(args, settings), sinks=sinks)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        print("chatgw serve needs uvicorn: pip install 'chatgw[local]'", file=sys.stderr)
        return 2
    sinks: list[Any] = []
    if args.metrics:
        from .prometheus import MetricsEndpoint, PrometheusSink

        sinks.append(PrometheusSink())
    settings, container = _build(args, sinks=sinks)
    if sinks:
        endpoint = MetricsEndpoint(sinks[0])  # an ASGI app: Starlette routes to it as it is
        container.app.add_route("/metrics", endpoint, methods=["GET"])  # type: ignore[arg-type]
    key, created = dev_key(container.store, settings.state_dir, settings.pepper)
    base = f"http://{args.host}:{args.port}"
    models = ", ".join(e.name for e in container.catalog.entries())
    print(f"chatgw serving on {base}  (OpenAI base_url: {base}/v2/llms)", flush=True)
    print(f"models: {models}", flush=True)
    if sinks:
        print(f"metrics (Prometheus text format): {base}/metrics", flush=True)
    if created:
        print(
            f"development key (shown once, saved in {settings.state_dir / DEV_KEY_FILE}):\n  {key}",
            flush=True,
        )
    else:
        print(f"development key: in {settings.state_dir / DEV_KEY_FILE}", flush=True)
    from .local_server import uvicorn_options

    uvicorn.run(container.app, host=args.host, port=args.port, **uvicorn_options())
    return 0


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
    event: dict[str, Any] = json.loads(text.replace(PLACEHOLDER, key))
    return event


def cmd_invoke(args: argparse.Namespace) -> int:
    settings, container = _build(args, metrics="emf")  # the EMF lines the function writes in Lambda
    key, _ = dev_key(container.store, settings.state_dir, settings.pepper)
    event = load_event(args.event, key)
    if args.stream:
        from .lambda_streaming import run_local

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
    serve.add_argument("--metrics", action="store_true", help="serve Prometheus metrics at /metrics")
    admin.add_store_options(serve)
    serve.set_defaults(func=cmd_serve)

    invoke = sub.add_parser("invoke", help="run a Lambda event through the handler, no Docker")
    invoke.add_argument("event", help="an API Gateway / function URL event JSON file")
    invoke.add_argument("--stream", action="store_true", help="through the response-streaming runtime")
    admin.add_store_options(invoke)
    invoke.set_defaults(func=cmd_invoke)

    admin.register(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(admin.guarded(args.func)(args))


if __name__ == "__main__":
    sys.exit(main())
