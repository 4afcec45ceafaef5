"""A deployed stack's outputs, read once per command with the operator's credentials."""

from __future__ import annotations

from functools import cache

from chatgw.access.peppers import PepperError


@cache
def outputs(stack: str, region: str | None = None) -> dict[str, str]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stacks = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack)["Stacks"]
    except (ClientError, BotoCoreError) as exc:
        raise PepperError(f"cannot read the outputs of stack {stack!r}: {exc}") from None
    return {str(o.get("OutputKey")): str(o.get("OutputValue")) for o in stacks[0].get("Outputs", [])}
