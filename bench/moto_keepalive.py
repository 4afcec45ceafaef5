"""A moto server that keeps HTTP/1.1 connections alive, as DynamoDB does (`python -m moto.server`
answers HTTP/1.0 and closes every connection, so each store call of the benchmark paid a new TCP
connection that production never pays).

    python -m bench.moto_keepalive PORT
"""

from __future__ import annotations

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class KeepAlive(MotoRequestHandler):
    protocol_version = "HTTP/1.1"


def main() -> None:
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True, request_handler=KeepAlive)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
