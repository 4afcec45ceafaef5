"""Every AWS client the gateway makes (DynamoDB, Secrets Manager, SSM, Bedrock) comes from one
botocore session per process, as boto3's default session would give them: the same credentials
chain, region and `AWS_ENDPOINT_URL_<SERVICE>` settings.

Why botocore and one session: `import boto3` costs about 35 ms of CPU (it imports s3transfer), and
each new boto3 session reloads the endpoint and partition data: a Secrets Manager client from a new
boto3 session cost 47 ms of CPU at init, from the shared session 5 ms (docs/bench.md, "Init")."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

_lock = threading.Lock()


@cache
def session() -> Any:
    import botocore.session

    return botocore.session.get_session()


def client(service: str, region: str | None = None, **kwargs: Any) -> Any:
    """A new client of `service`. A botocore session is not thread-safe while it makes clients (the
    clients are), so making one is serialised."""
    with _lock:
        return session().create_client(service, region_name=region, **kwargs)
