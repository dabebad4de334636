"""Failures nobody planned for still leave in the standard error shape, with a
reference id in place of a stack trace."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from tests.helpers import assert_error


def test_an_unexpected_error_is_a_500_with_a_reference_and_no_trace(caplog) -> None:  # type: ignore[no-untyped-def]
    app = create_app()

    def broken() -> None:
        raise RuntimeError("secret internal detail")

    app.add_api_route("/v1/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        error = assert_error(client.get("/v1/broken"), 500, code="internal_error")
    assert error["type"] == "server_error"
    assert "secret internal detail" not in error["message"]
    reference = error["message"].split("reference ")[1].rstrip(")")
    assert any(reference in record.getMessage() for record in caplog.records)


def test_wrong_method_is_405_in_the_same_shape(client) -> None:  # type: ignore[no-untyped-def]
    assert_error(client.put("/v1/files"), 405, code="method_not_allowed")
