"""moto server with one request handled at a time.

DynamoDB applies a conditional write atomically: the condition is checked and
the item changed as one step, so of two writers conditioned on the same
version at most one succeeds. moto's threaded server checks and changes in
separate Python steps without a lock, so under load two such writers can both
succeed, which the lease protocol (lib/core/lease.ts) relies on never
happening. Handling one request at a time restores the service's guarantee;
moto is bound by one interpreter lock anyway, so little throughput is lost.
Connections are still accepted by many threads, and a request body is read in
full before the lock is taken, so a slow client holds nobody up.

Usage: python moto-serve.py -H HOST -p PORT
"""

import argparse
import io
import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def serialized(app):
    lock = threading.Lock()

    def handle(environ, start_response):
        length = environ.get("CONTENT_LENGTH")
        if length and length.isdigit():
            body = environ["wsgi.input"].read(int(length))
            environ["wsgi.input"] = io.BytesIO(body)
        with lock:
            # Run the whole response inside the lock: moto answers with a list.
            return list(app(environ, start_response))

    return handle


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        serialized(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
