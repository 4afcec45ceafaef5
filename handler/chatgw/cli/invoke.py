"""`chatgw invoke EVENT`: one API Gateway or function URL event through the Lambda handler, no Docker."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from chatgw.aws_lambda.context import LambdaContext
from chatgw.cli.common import CliError, Subparsers
from chatgw.cli.local import DEV_KEY_HELP, build_gateway, local_dev_key
from chatgw.cli.stores import add_store_options, existing_state_dir

PLACEHOLDER = "CHATGW_DEV_KEY"
EVENT_MARKERS = ("httpMethod", "requestContext", "routeKey")
"""An API Gateway REST (v1), HTTP API (v2) or function URL event has at least one of these."""


def load_event(path: str, key: str) -> dict[str, Any]:
    text = Path(path).read_text()
    try:
        event = json.loads(text.replace(PLACEHOLDER, key))
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not JSON ({exc})", code=2) from None
    if not isinstance(event, dict) or not any(k in event for k in EVENT_MARKERS):
        raise CliError(f"{path}: not an API Gateway (REST or HTTP API) or function URL event", code=2)
    return event


def cmd_invoke(args: argparse.Namespace) -> int:
    load_event(args.event, PLACEHOLDER)  # a bad event is the one message, before anything is built
    existing_state_dir(args)  # a typo in --state-dir creates no store (serve is the one that does)
    settings, container = build_gateway(args, metrics="emf")  # the EMF lines the function writes in Lambda
    store = container.store
    key, _ = local_dev_key(args, settings, container)
    if key is None:
        store.close()
        raise CliError("no development key for this DynamoDB store: pass --dev-key to create one", code=2)
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

    context: Any = LambdaContext.local()
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


def register(subparsers: Subparsers) -> None:
    invoke = subparsers.add_parser("invoke", help="run a Lambda event through the handler, no Docker")
    invoke.add_argument("event", help="an API Gateway / function URL event JSON file")
    invoke.add_argument("--stream", action="store_true", help="through the response-streaming runtime")
    invoke.add_argument("--dev-key", action="store_true", help=DEV_KEY_HELP)
    add_store_options(invoke)
    invoke.set_defaults(func=cmd_invoke)
