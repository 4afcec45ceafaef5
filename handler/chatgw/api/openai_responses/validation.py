"""Request bodies to `ResponsesRequest`, and what is wrong with them to 400s in OpenAI's envelope
(the chat door's wording, reused), plus the Responses door's own rule: the gateway is stateless."""

from __future__ import annotations

import json

import pydantic

from chatgw.api.openai_chat.validation import to_invalid_request
from chatgw.api.openai_responses.wire import STATEFUL, ItemReference, ResponsesRequest
from chatgw.errors import InvalidRequest, UnsupportedParameter

NO_STATE = "the gateway keeps no responses or conversations: send the whole history in `input` (with `store: false`)"


def parse_responses_request(body: bytes) -> ResponsesRequest:
    if not body.strip():
        raise InvalidRequest("The request body is empty: send a JSON Responses request.", param="body")
    try:
        request = ResponsesRequest.model_validate_json(body)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        data = None
        if not any(e["type"] == "json_invalid" for e in errors):
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                data = None
        raise to_invalid_request(errors, data) from None
    refuse_stateful(request)
    return request


def refuse_stateful(request: ResponsesRequest) -> None:
    for name in STATEFUL:
        if getattr(request, name) not in (None, False):
            raise UnsupportedParameter(f"The parameter `{name}` is not supported: {NO_STATE}.", param=name)
    if isinstance(request.input, list):
        for i, item in enumerate(request.input):
            if isinstance(item, ItemReference):
                param = f"input[{i}]"
                raise UnsupportedParameter(
                    f"Items of type `item_reference` ({param}) are not supported: {NO_STATE}.", param=param
                )
