"""Operator-side DynamoDB: clients with short timeouts, the tables as template.yaml declares
them (for `chatgw tables create`), and a stack's table names (for `--stack`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from botocore.exceptions import BotoCoreError, ClientError

from chatgw import aws
from chatgw.errors import StoreUnavailable
from chatgw.store.dynamodb.call import error_code as _error_code
from chatgw.store.dynamodb.call import unavailable as _unavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

KEY_SCHEMA: list[dict[str, str]] = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]
ATTRIBUTES: list[dict[str, str]] = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
]
TTL_ATTRIBUTE = "expires_at"


def make_client(
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    connect_timeout: float = 2.0,
    read_timeout: float = 5.0,
    max_attempts: int = 1,
) -> DynamoDBClient:
    """A DynamoDB client with short timeouts; botocore itself honours AWS_ENDPOINT_URL_DYNAMODB.

    One attempt per call: the store retries (store/dynamodb/call.py), so botocore's retries would
    multiply them. Parameter validation is off: the store builds every request itself, and
    validating each against the service model cost CPU on every call (docs/bench.md)."""
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        parameter_validation=False,
    )
    try:
        client = aws.client("dynamodb", region, endpoint_url=endpoint_url, config=config)
    except BotoCoreError as exc:  # e.g. NoRegionError
        raise StoreUnavailable(f"Cannot open DynamoDB: {exc} (set AWS_REGION or --region)") from exc
    return cast("DynamoDBClient", client)


def create_tables(client: DynamoDBClient, keys_table: str, usage_table: str) -> list[str]:
    """Create both tables as template.yaml does (on-demand, pk/sk, TTL on usage); skip existing ones.
    Returns the names of the tables it created."""
    created: list[str] = []
    for name in (keys_table, usage_table):
        try:
            client.create_table(
                TableName=name,
                KeySchema=KEY_SCHEMA,  # type: ignore[arg-type]
                AttributeDefinitions=ATTRIBUTES,  # type: ignore[arg-type]
                BillingMode="PAY_PER_REQUEST",
                SSESpecification={"Enabled": True},
            )
            created.append(name)
        except ClientError as exc:
            if _error_code(exc) != "ResourceInUseException":
                raise _unavailable(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc
    try:
        for name in (keys_table, usage_table):
            client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        for name in created:
            _point_in_time_recovery(client, name)
        ttl = client.describe_time_to_live(TableName=usage_table)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            client.update_time_to_live(
                TableName=usage_table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
    except (ClientError, BotoCoreError) as exc:
        raise _unavailable(exc) from exc
    return created


def _point_in_time_recovery(client: DynamoDBClient, table: str) -> None:
    """As the template does; best effort, since DynamoDB Local and some emulators lack the API."""
    try:
        client.update_continuous_backups(
            TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    except ClientError:
        return


def stack_tables(stack: str, region: str | None = None) -> tuple[str, str]:
    """The (keys, usage) table names from a CloudFormation stack's outputs."""
    import boto3

    try:
        cfn = boto3.client("cloudformation", region_name=region)
        stacks = cfn.describe_stacks(StackName=stack)["Stacks"]
    except (ClientError, BotoCoreError) as exc:
        raise StoreUnavailable(f"Cannot read the outputs of stack {stack!r}: {exc}") from exc
    outputs = {o.get("OutputKey"): o.get("OutputValue") for o in stacks[0].get("Outputs", [])}
    keys_table, usage_table = outputs.get("KeysTableName"), outputs.get("UsageTableName")
    if not keys_table or not usage_table:
        raise StoreUnavailable(f"Stack {stack!r} has no KeysTableName and UsageTableName outputs.")
    return keys_table, usage_table
