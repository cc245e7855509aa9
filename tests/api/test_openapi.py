"""``/openapi.json`` describes exactly the routes there are, and no input yields a 5xx.

Schemathesis generates requests from the description (valid and invalid: wrong types,
out-of-range numbers, odd strings in paths, bodies that break the schema) against the
live API on the crashed devnet, a couple of dozen per operation, and checks that none
gets a server error and that every answer has a documented status, content type and
shape.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks

from api.app import create_app
from api.context import ApiContext
from api.openapi import openapi_spec
from chains.spec import Registry
from indexer.store import open_store

pytestmark = pytest.mark.chain

_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def _app_routes() -> set[tuple[str, str]]:
    store = open_store("sqlite://", migrate=False)
    try:
        app = create_app(ApiContext.build(store, Registry(chains=())))
        return {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.method in _METHODS and route.resource is not None
            and not route.resource.canonical.startswith(("/static", "/vendor"))
        }  # fmt: skip
    finally:
        store.dispose()


def _documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in openapi_spec()["paths"].items()
        for method in operations
    }


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    routes = _app_routes() - {("GET", "/")}  # the dashboard page is not part of the API
    assert routes == _documented()


def test_spec_is_well_formed(api: Any) -> None:
    served = api.get("/openapi.json").json()
    assert served["openapi"].startswith("3.1")
    refs = set(re.findall(r'"#/components/(\w+)/(\w+)"', str(served).replace("'", '"')))
    for kind, name in refs:
        assert name in served["components"][kind], f"dangling $ref {kind}/{name}"
    for path, operations in served["paths"].items():
        for method, op in operations.items():
            names = set(re.findall(r"{(\w+)}", path))
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert names == declared, f"{method} {path}: path parameters"
            assert "200" in op["responses"]


_OPERATIONS = sorted(_documented(), key=lambda op: (op[1], op[0]))


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("method", "path"), _OPERATIONS, ids=[f"{m} {p}" for m, p in _OPERATIONS])
def test_no_input_yields_a_server_error(api: Any, method: str, path: str, mode: str) -> None:
    schema = schemathesis.openapi.from_url(api.base + "/openapi.json")
    operation = schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    answered: list[int] = []

    @given(case=strategy)
    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(checks=_CHECKS, timeout=60)
        answered.append(response.status_code)

    try:
        run()
    except Unsatisfiable:
        if mode == "positive":
            raise
        return  # every input this operation takes is valid (no parameters, any string)
    assert answered
    assert max(answered) < 500
