"""Run by the SAM CLI's own interpreter (.venv-sam): `sam deploy --guided`'s parameter prompts, each
answered with Enter (the default), and its list of resources that trigger the authentication question."""

import json
import sys
from pathlib import Path

import click
from click.testing import CliRunner
from samcli.commands.deploy.auth_utils import auth_per_resource
from samcli.commands.deploy.guided_context import GuidedContext
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
from samcli.yamlhelper import yaml_parse

template = sys.argv[1]
params = yaml_parse(Path(template).read_text()).get("Parameters", {})
ctx = GuidedContext(
    template_file=template,
    stack_name="chatgw",
    s3_bucket=None,
    image_repository=None,
    image_repositories=None,
    s3_prefix=None,
)


@click.command()
def run():
    out = ctx.prompt_parameters(params, {}, "", "")
    click.echo("RESULT " + json.dumps({k: v["Value"] for k, v in out.items()}))


res = CliRunner().invoke(run, input="\n" * len(params))
stacks, _ = SamLocalStackProvider.get_stacks(template)
print(json.dumps({"exit": res.exit_code, "output": res.output, "auth": auth_per_resource(stacks)}))
