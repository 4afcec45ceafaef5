"""The buffered Lambda entry point: Mangum over the app (REST v1, HTTP API v2, function URL).
The app is built once per container, at init; lifespan is off (nothing to run per invoke)."""

from __future__ import annotations

from mangum import Mangum

from chatgw.compose import app

handler = Mangum(app(), lifespan="off")
