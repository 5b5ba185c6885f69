"""The Workers AI stand-in in its own process, for the benchmarks: `python bench/standin.py --port P`.

Two routes are added for the bench: `GET /_bench/ping` (readiness) and `POST /_bench/stamps`,
which returns the stand-in's first- and last-token stamps by last user message and forgets them
(and the request log), so state stays small over a run.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common import ACCOUNT, HOST, TOKEN, raise_nofile
from parley.standins.workers_ai import create_app


def build(first_token_delay: float, token_interval: float) -> Starlette:
    app = create_app(
        account_id=ACCOUNT, token=TOKEN, first_token_delay=first_token_delay, token_interval=token_interval
    )

    async def ping(request: Request) -> Response:
        return Response(b"ok")

    async def stamps(request: Request) -> Response:
        state = request.app.state
        first, state.first_bytes = state.first_bytes, {}
        last, state.last_bytes = state.last_bytes, {}
        state.first_byte_times.clear()
        state.requests.clear()
        return JSONResponse({"first": first, "last": last})

    app.router.routes.append(Route("/_bench/ping", ping))
    app.router.routes.append(Route("/_bench/stamps", stamps, methods=["POST"]))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-token-delay", type=float, default=0.05)
    parser.add_argument("--token-interval", type=float, default=0.02)
    args = parser.parse_args()
    raise_nofile()
    uvicorn.run(
        build(args.first_token_delay, args.token_interval),
        host=HOST,
        port=args.port,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
