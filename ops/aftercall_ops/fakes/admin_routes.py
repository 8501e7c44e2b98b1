"""The ``/__admin/`` endpoints every loopback fake serves (no auth), for tests and other processes.

Why it is its own module: the admin API is the operator's side of a fake, not the vendor's; it
drives :class:`~aftercall_ops.fakes.http.FakeHttpService` through its public methods only, plus the
two hooks a fake may override (``_admin_route`` for its own routes, ``_admin_error`` for its error
shape). :class:`~aftercall_ops.fakes.admin.FakeAdmin` is the client of these endpoints.

``GET /__admin/state``, ``GET /__admin/requests``, ``GET|POST|DELETE /__admin/faults``,
``POST /__admin/config`` (``{"rate_limit_per_second": 5, "rate_limit_retry_after": 1}``),
``POST /__admin/reset``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aftercall_ops.fakes.server import Answer, Request

if TYPE_CHECKING:
    from aftercall_ops.fakes.http import FakeHttpService


def admin_answer(service: FakeHttpService, request: Request) -> Answer:
    """Answer a ``/__admin/`` request; a bad body is a 400 in the fake's error shape, an unknown route a 404."""
    method = request.method
    try:
        body: Any = request.json()
    except ValueError:
        return Answer(400, service._admin_error("the body is not JSON"))
    route = request.path.rstrip("/").removeprefix("/__admin/")
    try:
        if route == "state" and method == "GET":
            return Answer(200, service.state())
        if route == "requests" and method == "GET":
            return Answer(200, [r.to_json() for r in service.requests])
        if route == "faults":
            if method == "GET":
                return Answer(200, [f.to_json() for f in service.faults])
            if method == "DELETE":
                service.clear_faults()
                return Answer(204, None)
            if method == "POST":
                rules = body if isinstance(body, list) else [body]
                if not all(isinstance(rule, dict) for rule in rules):
                    raise ValueError("send a fault rule object or a list of them")
                added = service.add_faults(rules)
                return Answer(201, [f.to_json() for f in added])
        if route == "config" and method == "POST":
            if not isinstance(body, dict):
                raise ValueError('send {"rate_limit_per_second": <number or null>}')
            service.set_rate_limit(body.get("rate_limit_per_second"), body.get("rate_limit_retry_after"))
            return Answer(200, {"rate_limit_per_second": service.rate_limit_per_second})
        if route == "reset" and method == "POST":
            service.reset()
            return Answer(204, None)
        own = service._admin_route(method, route, body)
        if own is not None:
            return own
    except (TypeError, ValueError) as exc:
        return Answer(400, service._admin_error(str(exc)))
    return Answer(404, service._admin_error(f"no admin route {method} {request.path}"))
