"""Every AWS call chatgw makes, recorded on the real botocore clients: all of them come from the
one botocore session of chatgw/aws.py, and a client copies the session's event handlers when it
is made, so a handler registered first sees every call of every client made after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.support.cfn_template import REGION

BEDROCK_ACTIONS = {
    "Converse": "InvokeModel",
    "ConverseStream": "InvokeModelWithResponseStream",
    "InvokeModel": "InvokeModel",
    "InvokeModelWithResponseStream": "InvokeModelWithResponseStream",
    "CountTokens": "CountTokens",
}
"""Bedrock's Converse calls are authorized as the model invocations they make."""


@dataclass(frozen=True)
class AwsCall:
    action: str
    """The IAM action, `service:Operation`."""
    resource: str
    """The ARN the call acts on."""


def _resource(service: str, operation: str, params: dict[str, Any]) -> str:
    if service == "dynamodb":
        return f"arn:aws:dynamodb:{REGION}:123456789012:table/{params['TableName']}"
    if service == "secretsmanager":
        return str(params["SecretId"])  # chatgw names its secrets by ARN
    if service == "ssm":
        return f"arn:aws:ssm:{REGION}:123456789012:parameter{params['Name']}"
    if service == "bedrock":
        model = str(params["modelId"])
        return model if model.startswith("arn:") else f"arn:aws:bedrock:{REGION}::foundation-model/{model}"
    raise AssertionError(f"an AWS call the check does not know: {service}:{operation}")


def _action(service: str, operation: str) -> str:
    if service == "bedrock":
        return f"bedrock:{BEDROCK_ACTIONS[operation]}"
    return f"{service}:{operation}"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[AwsCall] = []
        self.on = False

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if self.on:
            service = model.service_model.signing_name
            self.calls.append(AwsCall(_action(service, model.name), _resource(service, model.name, params)))

    @contextmanager
    def recording(self) -> Iterator[list[AwsCall]]:
        start = len(self.calls)
        self.on = True
        taken: list[AwsCall] = []
        try:
            yield taken
        finally:
            self.on = False
            taken.extend(self.calls[start:])


@contextmanager
def aws_calls() -> Iterator[Recorder]:
    from chatgw import aws

    recorder = Recorder()
    aws.session().register("provide-client-params", recorder)
    try:
        yield recorder
    finally:
        aws.session().unregister("provide-client-params", recorder)
