"""The servers under test and how to start them: the fake upstream, the baseline, chatgw (`chatgw serve`
on SQLite, or on DynamoDB in a moto server), and what each one is asked."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .load import DOOR_PATHS, chat_body, door_body
from .procs import PY, Server, free_port

CHAT_PATH = "/v1/chat/completions"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto's placeholder, not a credential
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
KEYS_TABLE, USAGE_TABLE = "bench-keys", "bench-usage"
CHUNK_COUNTS = (20, 100)
DOOR_CHUNKS = 20
"""The Responses and Messages doors are measured buffered and with 20-event streams."""


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@dataclass(frozen=True)
class Features:
    openai_backend: bool
    dynamodb_store: bool
    streaming_runtime: bool
    responses_door: bool = False
    """The Responses door and the `openai` backend's `api: responses`."""
    messages_door: bool = False
    """The Messages door and the `anthropic` backend."""

    @classmethod
    def detect(cls) -> Features:
        return cls(
            responses_door=has("chatgw.api.openai_responses.routes") and has("chatgw.backends.openai_responses"),
            messages_door=has("chatgw.api.anthropic_messages.routes") and has("chatgw.backends.anthropic"),
            openai_backend=has("chatgw.backends.openai_chat"),
            dynamodb_store=has("chatgw.store.dynamodb.store") and has("moto"),
            streaming_runtime=has("chatgw.aws_lambda.stream_runtime") and has("chatgw.aws_lambda.fake_runtime_api"),
        )


def model_for(target: str, chunks: int, features: Features) -> str:
    """The model name to ask for `chunks` streamed pieces (and a buffered answer of as many words)."""
    if target.startswith("chatgw") and not features.openai_backend:
        return "echo"
    return f"fake-{chunks}"


def body_for(target: str, stream: bool, chunks: int, features: Features) -> bytes:
    model = model_for(target, chunks, features)
    # echo answers with the last user message word by word: as many words as chunks wanted
    words = chunks if model == "echo" else 8
    return chat_body(model, stream, words=words)


def doors(features: Features) -> list[str]:
    """The doors measured beside the chat door in this tree."""
    return [
        d for d, present in (("responses", features.responses_door), ("messages", features.messages_door)) if present
    ]


def door_target(door: str, target: str) -> tuple[str, str]:
    """(path, model) for a door: chatgw's model names the backend of the door's dialect; the baseline
    and the upstream are asked for the fake's own model."""
    model = f"{door}-fake-{DOOR_CHUNKS}" if target.startswith("chatgw") else f"fake-{DOOR_CHUNKS}"
    return DOOR_PATHS[door], model


def door_request(door: str, target: str, stream: bool) -> bytes:
    return door_body(door, door_target(door, target)[1], stream)


def catalog(upstream_port: int, features: Features) -> str:
    upstream = f"http://127.0.0.1:{upstream_port}"
    models: dict[str, dict[str, str]] = {
        f"fake-{n}": {
            "backend": "openai",
            "base_url": f"{upstream}/v1",
            "api_key_env": "BENCH_UPSTREAM_KEY",
            "upstream_model": f"fake-{n}",
        }
        for n in CHUNK_COUNTS
    }
    # one model per door, to a backend of the door's own dialect (the body passes nearly as sent)
    fake = f"fake-{DOOR_CHUNKS}"
    if features.responses_door:
        models[f"responses-{fake}"] = {**models[fake], "api": "responses"}
    if features.messages_door:
        models[f"messages-{fake}"] = {
            "backend": "anthropic",
            "base_url": upstream,
            "api_key_env": "BENCH_UPSTREAM_KEY",
            "upstream_model": fake,
        }
    return json.dumps(models)


def upstream_server(log: Path, chunk_delay_ms: float = 0.0) -> Server:
    port = free_port()
    argv = [PY, "-m", "bench.fake_upstream", "--port", str(port), "--chunk-delay-ms", str(chunk_delay_ms)]
    return Server("upstream", argv, port, log=log)


def baseline_server(upstream_port: int, key: str, log: Path) -> Server:
    port = free_port()
    env = {"BENCH_UPSTREAM": f"http://127.0.0.1:{upstream_port}/v1", "BENCH_KEY": key}
    return Server("baseline", [PY, "-m", "bench.baseline", "--port", str(port)], port, env=env, log=log)


def chatgw_env(state_dir: Path, upstream_port: int, features: Features, dynamodb_port: int | None) -> dict[str, str]:
    env = {
        "CHATGW_STATE_DIR": str(state_dir),
        "BENCH_UPSTREAM_KEY": "upstream-key",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if features.openai_backend:
        env["CHATGW_MODELS"] = catalog(upstream_port, features)
    if dynamodb_port is not None:
        env.update(AWS_ENV)
        env["AWS_ENDPOINT_URL_DYNAMODB"] = f"http://127.0.0.1:{dynamodb_port}"
        env["CHATGW_KEYS_TABLE"], env["CHATGW_USAGE_TABLE"] = KEYS_TABLE, USAGE_TABLE
    return env


def chatgw_server(name: str, env: dict[str, str], log: Path, counted_out: Path | None = None) -> Server:
    port = free_port()
    if counted_out is not None:
        argv = [PY, "-m", "bench.chatgw_counted", "--port", str(port)]
        env = {**env, "BENCH_COUNTS_OUT": str(counted_out)}
    else:
        # the store comes from the environment (CHATGW_STATE_DIR, or the DynamoDB tables), as in Lambda
        argv = [PY, "-m", "chatgw.cli", "serve", "--port", str(port)]
    return Server(name, argv, port, env=env, log=log)


def moto_server(log: Path) -> Server:
    """moto, keeping connections alive as DynamoDB does (bench/moto_keepalive.py)."""
    port = free_port()
    argv = [PY, "-m", "bench.moto_keepalive", str(port)]
    return Server("moto", argv, port, env=AWS_ENV, log=log)


def create_key(env: dict[str, str]) -> str:
    """A key with limits (so that every request passes admission), in the store `env` selects."""
    from chatgw.access.keys import Limits, new_key
    from chatgw.compose import open_store
    from chatgw.settings import Settings

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        settings = Settings.from_env()
        if settings.uses_dynamodb:
            from chatgw.store.dynamodb.tables import create_tables, make_client

            create_tables(make_client(), KEYS_TABLE, USAGE_TABLE)
        store = open_store(settings)
        limits = Limits(requests_per_minute=10**9, tokens_per_minute=10**12, monthly_token_budget=10**15)
        key, record = new_key("bench", pepper=settings.pepper, limits=limits, owner="bench")
        store.create_key(record)
        store.close()
        return key
    finally:
        os.environ.clear()
        os.environ.update(saved)
