"""Request bodies to `ResponsesRequest`, and what is wrong with them to 400s in OpenAI's envelope
(the chat door's wording, reused), plus the Responses door's own rule: the gateway is stateless."""

from __future__ import annotations

from chatgw.api.http import parse_json_body
from chatgw.api.openai_chat.validation import to_invalid_request
from chatgw.api.openai_responses.wire import STATEFUL, ItemReference, ResponsesRequest
from chatgw.errors import UnsupportedParameter

NO_STATE = "the gateway keeps no responses or conversations: send the whole history in `input` (with `store: false`)"


def parse_responses_request(body: bytes) -> ResponsesRequest:
    request = parse_json_body(ResponsesRequest, body, "Responses", to_invalid_request)
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
