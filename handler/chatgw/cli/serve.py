"""`chatgw serve`: the gateway on this machine (uvicorn, the embedded SQLite store by default)."""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from chatgw.cli.common import CliError, Subparsers
from chatgw.cli.local import DEV_KEY_HELP, build_gateway, dev_key_path, local_dev_key
from chatgw.cli.stores import add_store_options


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
    settings, container = build_gateway(args, sinks=sinks)
    if sinks:
        from chatgw.observability.prometheus import exposure_warning, metrics_token

        token, token_file = metrics_token(settings.metrics_token, settings.state_dir)
        endpoint = MetricsEndpoint(sinks[0], token)  # an ASGI app: Starlette routes to it as it is
        container.app.add_route("/metrics", endpoint, methods=["GET"])  # type: ignore[arg-type]
        if warning := exposure_warning(args.host):
            print(warning, file=sys.stderr, flush=True)
    key, created = local_dev_key(args, settings, container)
    base = f"http://{args.host}:{args.port}"
    models = ", ".join(e.name for e in container.catalog.entries())
    print(f"chatgw serving on {base}  (OpenAI base_url: {base}/v2/llms)", flush=True)
    print(f"models: {models}", flush=True)
    path = dev_key_path(container.store, settings.state_dir)
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
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", code=1) from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another port: --port N, make run PORT=N)"
        ) from None
    sock.set_inheritable(True)
    return sock


def register(subparsers: Subparsers) -> None:
    serve = subparsers.add_parser("serve", help="run the gateway locally (uvicorn, embedded store)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--dev-key", action="store_true", help=DEV_KEY_HELP)
    serve.add_argument("--metrics", action="store_true", help="serve Prometheus metrics at /metrics")
    add_store_options(serve)
    serve.set_defaults(func=cmd_serve)
