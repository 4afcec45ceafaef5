"""template.yaml evaluated as CloudFormation would for one deployment: its short-form tags parsed,
intrinsic functions resolved against chosen parameters and physical names, and a role's statements
asked whether they allow an (action, resource) pair as IAM would (wildcards, Allow only)."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
ACCOUNT = "123456789012"  # moto's default account: the ARNs it hands out carry it
REGION = "us-east-1"


class CfnLoader(yaml.SafeLoader):
    pass


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
        return {name: value}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


CfnLoader.add_multi_constructor("!", _intrinsic)


def load(text: str | None = None) -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.load(TEMPLATE.read_text() if text is None else text, Loader=CfnLoader)
    return parsed


NO_VALUE = object()


@dataclass
class Deployment:
    """One stack of the template: its parameters (defaults otherwise) and the physical names of
    the resources a policy names (a table's name, a secret's ARN, a log group's name)."""

    template: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    physical: dict[str, str] = field(default_factory=dict)
    stack: str = "chatgw"

    def parameter(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        spec = self.template["Parameters"][name]
        default = spec.get("Default")
        if spec["Type"] == "CommaDelimitedList":
            return [] if default in (None, "") else str(default).split(",")
        return default

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Partition": "aws",
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": self.stack,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.template["Parameters"]:
            return self.parameter(name)
        return self.physical[name]

    def arn_of(self, resource: str) -> str:
        kind = self.template["Resources"][resource]["Type"]
        name = self.physical[resource]
        if kind == "AWS::DynamoDB::Table":
            return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
        if kind == "AWS::Logs::LogGroup":
            return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"
        if kind == "AWS::SecretsManager::Secret":
            return name  # its Ref is its ARN already
        raise KeyError(f"no ARN rule for {kind}")

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self.resolve(item) for item in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((name, argument),) = value.items()
            if name == "Ref":
                return self.ref(argument)
            if name == "Fn::GetAtt":
                resource, attribute = argument
                assert attribute == "Arn", argument
                return self.arn_of(resource)
            if name == "Fn::Sub":
                return re.sub(r"\$\{([^}!]+)\}", lambda m: str(self.ref(m.group(1))), argument)
            if name == "Fn::If":
                return self.resolve(argument[1] if self.condition(argument[0]) else argument[2])
            if name == "Fn::Equals":
                return self.resolve(argument[0]) == self.resolve(argument[1])
            if name == "Fn::Not":
                return not self.resolve(argument[0])
            if name == "Fn::And":
                return all(self.resolve(item) for item in argument)
            if name == "Fn::Join":
                return argument[0].join(self.resolve(argument[1]))
            if name == "Condition":
                return self.condition(argument)
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in value.items()) if v is not NO_VALUE}

    def statements(self, role: str) -> list[dict[str, Any]]:
        """The role's inline statements as deployed (conditions applied, intrinsics resolved)."""
        properties = self.template["Resources"][role]["Properties"]
        found: list[dict[str, Any]] = []
        for policy in properties.get("Policies", []):
            for statement in self.resolve(policy["PolicyDocument"]["Statement"]):
                found.append(statement)
        return found


def as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _matches(pattern: str, value: str) -> bool:
    # IAM's wildcards: `*` any run of characters, `?` one; case-sensitive for resources
    return fnmatch.fnmatchcase(value, pattern)


def allows(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    """Whether an Allow statement names the action (case-insensitive, wildcards) and the resource.
    The templates' roles have no Deny and no Condition: a statement with either fails the check."""
    for statement in statements:
        assert statement["Effect"] == "Allow" and "Condition" not in statement, statement
        actions = [a.lower() for a in as_list(statement["Action"])]
        if not any(_matches(a, action.lower()) for a in actions):
            continue
        if any(_matches(r, resource) for r in as_list(statement["Resource"])):
            return True
    return False


def generated_secret(resource: dict[str, Any]) -> str:
    """The value Secrets Manager generates for a secret's `GenerateSecretString`: its
    `SecretStringTemplate` with `GenerateStringKey` set to a fresh password of `PasswordLength`."""
    import secrets
    import string

    spec = resource["Properties"]["GenerateSecretString"]
    alphabet = string.ascii_letters + string.digits
    if not spec.get("ExcludePunctuation"):
        alphabet += "!#$%&()*+,-./:;<=>?@[]^_`{|}~"
    value = json.loads(spec["SecretStringTemplate"])
    value[spec["GenerateStringKey"]] = "".join(secrets.choice(alphabet) for _ in range(int(spec["PasswordLength"])))
    return json.dumps(value)


def moto_stack_outputs(physical: dict[str, str], overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """The `Outputs` of a stand-in stack (for moto's CloudFormation): every output of template.yaml
    whose value names only the resources given in `physical`, resolved as CloudFormation would;
    `overrides` replaces the value of outputs that point at AWS itself (an API's https URL), and
    each must be an output the template has. A renamed or missing output is then missing here too."""
    template = load()
    deployment = Deployment(template, physical=physical)
    outputs: dict[str, Any] = {}
    for name, output in template["Outputs"].items():
        if "Condition" in output:
            continue
        try:
            outputs[name] = {"Value": str(deployment.resolve(output["Value"]))}
        except KeyError:  # names a resource the stand-in does not have
            continue
    for name, value in (overrides or {}).items():
        assert name in template["Outputs"], f"template.yaml has no output {name}"
        outputs[name] = {"Value": value}
    return outputs


def pepper_secret() -> str:
    """The pepper secret's first value, as the stack's `GenerateSecretString` makes it."""
    return generated_secret(load()["Resources"]["PepperSecret"])
