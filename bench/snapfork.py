"""The streaming runtime initialised for a snapshot whose `restore/next` returns in one forked copy
(the "restored environment"); the original waits for it. For `bench.snapinit`'s restore figure.

    AWS_LAMBDA_INITIALIZATION_TYPE=snap-start AWS_LAMBDA_RUNTIME_API=... python -m bench.snapfork
"""

from __future__ import annotations

import os
import random
import sys

from chatgw.aws_lambda import snapstart
from chatgw.aws_lambda.stream_runtime import run


def restore_in_a_copy(address: str) -> None:
    snapstart.restore_next(address)
    state = random.getstate()
    pid = os.fork()
    if pid == 0:
        random.setstate(state)  # a snapshot restore does not reseed (CPython's fork does)
        return
    os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))


if __name__ == "__main__":
    sys.exit(run(os.environ["AWS_LAMBDA_RUNTIME_API"], max_invocations=1, wait_for_restore=restore_in_a_copy))
