"""A SnapStart snapshot simulated by fork: the streaming runtime (`lambda_streaming.run`, real app,
DynamoDB store) initialised for a snapshot, whose `restore/next` returns in N forked copies of the
process, as Lambda resumes N environments from one snapshot. Each copy runs the after-restore hooks
and serves INVOCATIONS events; the parent (the snapshot itself) only waits for them.

    python -m tests.support.snapfork COPIES INVOCATIONS

The app is chatgw's, wrapped so that every response says which process answered, its container id
in the logs and three draws of `random`. A before-snapshot hook registered ahead of chatgw's own (so
run after it) reads the store, so that botocore's pool holds a connection when the snapshot is taken:
only the after-restore hooks can keep the copies off it."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import snapshot_restore_py
from mangum.types import ASGI, Receive, Scope, Send

import chatgw
from chatgw import compose
from chatgw.aws_lambda import snapstart
from chatgw.aws_lambda.stream_runtime import run
from chatgw.observability import logs


def factory() -> ASGI:
    snapshot_restore_py.register_before_snapshot(lambda: compose.container().store.get_key("warm00000000"))
    app = compose.container().app

    async def probed(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_probed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                draws = ",".join(repr(random.random()) for _ in range(3))
                probe = [(b"x-probe-pid", str(os.getpid()).encode()), (b"x-probe-random", draws.encode())]
                probe.append((b"x-probe-container", logs.container_id().encode()))
                message = {**message, "headers": [*message.get("headers", []), *probe]}
            await send(message)

        await app(scope, receive, send_probed)

    return probed


def forking_restore(copies: int) -> snapstart.RestoreNext:
    def restore_next(address: str) -> None:
        snapstart.restore_next(address)
        # The snapshot: everything in memory now is what each restored environment starts from.
        # CPython reseeds `random` in a forked child; a snapshot restore does not, so undo that.
        state = random.getstate()
        children = []
        for _ in range(copies):
            pid = os.fork()
            if pid == 0:
                random.setstate(state)
                return  # this copy goes on: after-restore hooks, then invocations
            children.append(pid)
        failed = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0 for pid in children)
        os._exit(1 if failed else 0)

    return restore_next


CHECKOUT = Path(__file__).resolve().parents[2]


def main() -> int:
    # The code under test is this checkout's: a chatgw installed elsewhere would prove nothing about it.
    if not Path(chatgw.__file__).resolve().is_relative_to(CHECKOUT / "handler"):
        print(f"snapfork: chatgw comes from {chatgw.__file__}, not {CHECKOUT / 'handler'}", file=sys.stderr)
        return 3
    copies, invocations = int(sys.argv[1]), int(sys.argv[2])
    address = os.environ["AWS_LAMBDA_RUNTIME_API"]
    return run(address, factory, max_invocations=invocations, wait_for_restore=forking_restore(copies))


if __name__ == "__main__":
    sys.exit(main())
