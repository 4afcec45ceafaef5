"""One event through the buffered entry point in a fresh process, for the cold-start figure: imports
`chatgw.aws_lambda.buffered` (which builds the app), answers the event, prints the wall time of the answer.

    python -m bench.cold_buffered EVENT.json KEY MODEL
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


class Context:
    aws_request_id = "cold-start"
    function_name = "chatgw-bench"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:chatgw-bench"
    memory_limit_in_mb = 1024

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def load_event(path: str, key: str, model: str) -> dict[str, Any]:
    """As `bench.coldstart.load_event`, repeated here so that this process imports nothing of the harness."""
    event: dict[str, Any] = json.loads(Path(path).read_text().replace("CHATGW_DEV_KEY", key))
    body = json.loads(event["body"])
    body["model"] = model
    event["body"] = json.dumps(body)
    return event


def main() -> int:
    from chatgw.aws_lambda.buffered import handler

    response = handler(load_event(sys.argv[1], sys.argv[2], sys.argv[3]), Context())
    answered = time.time()
    if response.get("statusCode") != 200:
        print(response, file=sys.stderr)
        return 1
    print(answered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
