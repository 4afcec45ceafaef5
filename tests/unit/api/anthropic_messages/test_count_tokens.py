"""`POST /v1/messages/count_tokens`: the backend's own count, outside the key's rate limits, and a 404
(never an estimate) when the model's backend cannot count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatgw.access.keys import Limits
from chatgw.backends.echo import EchoBackend
from chatgw.compose import Container
from chatgw.conversation import Conversation
from chatgw.deadline import Deadline
from tests.support.asgi_client import auth, call
from tests.support.keys import add_key

COUNT = "/v1/messages/count_tokens"
ASK = {"model": "counted", "messages": [{"role": "user", "content": "one two three"}]}


class CountingEcho(EchoBackend):
    """Echo with an upstream's count: the number of words of the request's messages."""

    def __init__(self) -> None:
        super().__init__("counted")
        self.seen: list[Conversation] = []

    async def count_tokens(self, request: Conversation, deadline: Deadline | None = None) -> int:
        self.seen.append(request)
        return 3


def test_the_backends_count_for_a_key_past_its_rate_limit(make_container: Callable[..., Container]) -> None:
    backend = CountingEcho()
    container = make_container(backends={"counted": backend})
    key = add_key(container, limits=Limits(requests_per_minute=1))
    answers = [call(container, "POST", COUNT, json=ASK, headers=auth(key)) for _ in range(5)]
    assert [(r.status_code, r.json()) for r in answers] == [(200, {"input_tokens": 3})] * 5
    assert answers[0].headers["request-id"]
    assert backend.seen[0].max_output_tokens is None and backend.seen[0].model == "counted"
    messages: Any = {**ASK, "max_tokens": 5}
    assert call(container, "POST", "/v1/messages", json=messages, headers=auth(key)).status_code == 200


def test_a_backend_that_cannot_count_is_a_404_and_a_model_the_key_may_not_use_too(
    make_container: Callable[..., Container],
) -> None:
    container = make_container(backends={"counted": CountingEcho()})
    response = call(container, "POST", COUNT, json={**ASK, "model": "echo"}, headers=auth(add_key(container)))
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
    assert "cannot count tokens" in response.json()["error"]["message"]
    limited = add_key(container, allowed_models=("echo",))
    response = call(container, "POST", COUNT, json=ASK, headers=auth(limited))
    assert response.status_code == 404 and "`counted` does not exist" in response.json()["error"]["message"]
    assert call(container, "POST", COUNT, json=ASK).json()["error"]["type"] == "authentication_error"
