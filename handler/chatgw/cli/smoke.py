"""`chatgw smoke`: the post-deploy proof, run against a live gateway.

`--url BASE_URL --key KEY`, or `--stack NAME` (the stack's `OpenAIBaseUrl`; a temporary key is made
in its keys table and deleted afterwards, and the usage ledger is checked for the calls). Prints a
table of checks and exits 1 when any fails (a check that could not be judged is not a failure, but it
is shown as WARN, never as a pass, and the summary says it was not checked).

The checks, and how streaming is judged: smoke_checks.py.
"""

from __future__ import annotations

import argparse
import json
import sys

import httpx

from chatgw.cli.common import CliError, Subparsers, print_table
from chatgw.cli.smoke_checks import Check, Smoke


def report(checks: list[Check], as_json: bool) -> int:
    """The table (or JSON) and the exit code: 1 when a check failed. A check that could not be judged
    (streaming, on a model that answers at once) is not a failure, but it is never reported as a
    pass: a WARN row and a summary line that says what went unproven, since the streaming check is
    the one thing only a deployment shows."""
    failed = [c for c in checks if not c.ok]
    unchecked = [c.name for c in checks if c.skipped]
    if as_json:
        blob = {"ok": not failed, "complete": not unchecked, "unchecked": unchecked}
        print(json.dumps({**blob, "checks": [c.__dict__ for c in checks]}, indent=2))
    else:
        rows = [[c.name, "WARN" if c.skipped else "pass" if c.ok else "FAIL", c.detail] for c in checks]
        print_table(["CHECK", "RESULT", "DETAIL"], rows)
        passed = len(checks) - len(failed) - len(unchecked)
        summary = f"\n{passed} of {len(checks)} checks passed"
        if unchecked:
            summary += f"; WARN: NOT CHECKED: {', '.join(unchecked)} (see its row: the deployment is not proven)"
        print(summary, file=sys.stderr)
    return 1 if failed else 0


def cmd_smoke(args: argparse.Namespace) -> int:
    if bool(args.url) == bool(args.stack):
        raise CliError("give --stack NAME, or --url BASE_URL with --key KEY", code=2)
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        if args.url:
            if not args.key:
                raise CliError("--url needs --key KEY (a key of that gateway)", code=2)
            return report(Smoke(args.url, args.key, args.model, client).run(), args.json)
        from chatgw.cli.smoke_stack import run_on_stack

        return report(run_on_stack(args, client), args.json)


def register(subparsers: Subparsers) -> None:
    smoke = subparsers.add_parser(
        "smoke",
        help="prove a deployment end to end (streaming included)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    smoke.add_argument("--stack", default=None, help="a deployed stack (its OpenAIBaseUrl; a temporary key)")
    smoke.add_argument("--url", default=None, metavar="BASE_URL", help="the gateway's base URL (e.g. .../v2/llms)")
    smoke.add_argument("--key", default=None, help="a key of that gateway (with --url)")
    smoke.add_argument("--model", default=None, help="the model to call (default: the first the key may use)")
    smoke.add_argument("--region", default=None, help="AWS region of the stack")
    smoke.add_argument("--pepper-secret", default=None, metavar="ARN", help="the key peppers' secret (with --stack)")
    smoke.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    smoke.add_argument("--json", action="store_true")
    smoke.set_defaults(func=cmd_smoke)
