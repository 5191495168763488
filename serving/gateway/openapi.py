"""The OpenAPI document: FastAPI's for the framework routes, plus the two generation routes, which
are plain ASGI (they read raw bytes for speed, so FastAPI neither serves nor describes them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

if TYPE_CHECKING:
    from serving.gateway.app import Route


def openapi_builder(app: FastAPI, routes: Sequence[Route]) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        paths = doc.setdefault("paths", {})
        for r in routes:
            if r.request_model is None:
                continue
            name = r.request_model.__name__
            schema = r.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[name] = schema
            paths.setdefault(r.path, {})[r.method.lower()] = {
                "summary": r.summary,
                "operationId": r.handler,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
                },
                "responses": {
                    "200": {
                        "description": "A completion (JSON), or a stream of them (text/event-stream)",
                        "content": {"application/json": {}, "text/event-stream": {}},
                    }
                },
            }
        app.openapi_schema = doc
        return doc

    return build
