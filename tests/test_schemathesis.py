"""Generated requests, valid and invalid, against every operation of /openapi.json: the
server never answers 5xx, and every answer has the status, type and shape it documents.

Positive-data acceptance is not checked: a schema-valid request may still be refused by
design, for characters outside the model's vocabulary (422) or a length over a limit (413).
"""
from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.main import create_app
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_headers_conformance, response_schema_conformance,
                                               status_code_conformance)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]


@pytest.fixture(scope="module")
def api_schema(settings, tmp_path_factory):
    # A data directory of its own: generated uploads and runs must not reach other tests.
    data_dir = tmp_path_factory.mktemp("fuzz-data")
    shutil.copytree(settings.data_dir / "models", data_dir / "models")
    # Small limits keep each generated request cheap; over them is a documented 413.
    app = create_app(settings.model_copy(update={"data_dir": data_dir, "max_text_chars": 500,
                                                 "max_sample_length": 200, "max_gradient_chars": 200,
                                                 "max_parameters": 50_000, "max_step_chars": 2_000}))
    return schemathesis.openapi.from_asgi("/openapi.json", app)   # runs the lifespan itself


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_keeps_to_its_documented_contract(case):
    case.call_and_validate(checks=CHECKS)
