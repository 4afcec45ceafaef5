"""`chatgw smoke --stack` reports how new environments started, from Lambda's REPORT lines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml
from botocore.exceptions import ClientError

from chatgw.cli.smoke_init import init_check, log_group, summarize
from tests.support.cfn_template import TEMPLATE, CfnLoader

COLD = (
    "REPORT RequestId: 1f0b Duration: 812.31 ms Billed Duration: 1700 ms Memory Size: 1024 MB "
    "Max Memory Used: 98 MB Init Duration: 887.20 ms"
)
RESTORED = (
    "REPORT RequestId: 2a1c Duration: 40.02 ms Billed Duration: 290 ms Memory Size: 512 MB "
    "Max Memory Used: 90 MB Restore Duration: 251.50 ms Billed Restore Duration: 120 ms"
)


def templates_log_group(stack: str) -> str:
    """The name template.yaml gives the log group the function writes to, for a stack of that name."""
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    resources = loaded["Resources"]
    function = resources["Function"]  # the gateway's (the ledger replay function has its own group)
    ref = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    name = resources[ref]["Properties"]["LogGroupName"]["Fn::Sub"]
    return str(name).replace("${AWS::StackName}", stack)


class Logs:
    def __init__(self, messages: list[str] | None = None, error: Exception | None = None) -> None:
        self.messages, self.error = messages or [], error
        self.asked: dict[str, Any] = {}

    def filter_log_events(self, **kwargs: Any) -> dict[str, Any]:
        self.asked = kwargs
        if self.error is not None:
            raise self.error
        return {"events": [{"message": m} for m in self.messages]}


def test_cold_starts_and_restores_are_counted_with_their_durations() -> None:
    assert summarize([COLD, COLD.replace("887.20", "1003.00"), RESTORED]) == (
        "2 cold start(s), median init 945 ms, max 1003 ms; 1 SnapStart restore(s), median restore 252 ms, max 252 ms"
    )
    assert summarize(["REPORT RequestId: x Duration: 3.1 ms"]).startswith("none in the window")


def test_the_check_reads_the_stacks_function_log_group_and_never_fails() -> None:
    logs = Logs([COLD])
    now = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
    check = init_check("chatgw", None, now, logs)
    assert check.ok and "1 cold start(s)" in check.detail
    assert logs.asked["logGroupName"] == log_group("chatgw") == templates_log_group("chatgw")
    assert logs.asked["startTime"] == int(now.timestamp() * 1000) - 3_600_000

    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "FilterLogEvents")
    check = init_check("chatgw", None, now, Logs(error=denied))
    assert check.ok and "AccessDeniedException" in check.detail
