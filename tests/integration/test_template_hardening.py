"""Issue 16's template findings: the API accepts TLS 1.2 or later only, and the optional function
URL (which bypasses the stage throttle, access logs and TLS policy) is off by default and says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.template import resources_of, translate
from tests.support.template import sam as sam
from tests.support.template import template as template


def test_the_api_refuses_tls_below_1_2(sam: Path, template: dict[str, Any]) -> None:
    (api,) = resources_of(template, "AWS::Serverless::Api").values()
    assert api["Properties"]["SecurityPolicy"] == "TLS_1_2"
    translated = translate(sam, {})
    (rest_api,) = resources_of(translated, "AWS::ApiGateway::RestApi").values()
    assert rest_api["Properties"]["SecurityPolicy"] == "TLS_1_2"  # SAM carries it to the RestApi


def test_the_function_url_is_off_by_default_and_says_what_it_bypasses(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["EnableFunctionUrl"]
    assert parameter["Default"] == "false"
    assert "bypasses the API stage's throttle" in " ".join(parameter["Description"].split())
