"""JSON schemas for the deployment files, taken from the pinned ``check-jsonschema`` package.

check-jsonschema (requirements-dev.txt) ships vendored copies of the Compose Specification schema
(``compose-spec.json``, Apache-2.0, from the compose-spec project) and SchemaStore's Cloud Build
schema (``cloudbuild.json``, Apache-2.0); their licences sit beside them in the package
(``check_jsonschema/builtin_schemas/vendor/licenses/``). We read them as data and validate with
``jsonschema``; nothing is fetched at test time.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import jsonschema

_VENDOR = "check_jsonschema.builtin_schemas.vendor"


def load_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((files(_VENDOR) / f"{name}.json").read_text(encoding="utf-8"))
    return schema


def schema_errors(document: object, name: str) -> list[str]:
    """Every violation of schema ``name`` by ``document``, as ``path: message`` lines."""
    schema = load_schema(name)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]
