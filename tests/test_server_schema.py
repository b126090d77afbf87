"""The server against its own OpenAPI schema (schemathesis): requests generated from the schema, valid and not, on
every operation; a client's mistake is answered 4xx with the OpenAI error shape, never a 500."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from schemathesis.checks import not_a_server_error

from tests.test_server import served

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory, template_home):
    # serve --max-tokens 8: a generated request may ask for a whole context of tokens, which the 135M model would
    # spend seconds on per example without finding anything more
    with served(tmp_path_factory, template_home, slots=4, max_queue=8, max_tokens=8) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(bounded_server):
    return schemathesis.openapi.from_url(f"{bounded_server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
# 15 examples per operation in `make test` (about 30 s), a third of the profile's under `make test-fuzz`
@hsettings(
    max_examples=max(15, hsettings.default.max_examples // 3), deadline=None, suppress_health_check=list(HealthCheck)
)
def test_no_request_the_schema_allows_or_nearly_allows_gets_a_500(case):
    response = case.call(timeout=120)
    case.validate_response(response, checks=[not_a_server_error])
    content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis keeps every value of a header
    if response.status_code >= 400 and content_type.startswith("application/json"):
        body = response.json()
        if case.path.startswith("/api/"):  # Ollama's routes answer in Ollama's shape
            assert isinstance(body.get("error"), str) and body["error"].strip(), body
        else:
            assert "error" in body and "message" in body["error"], body


def test_the_servers_max_tokens_bounds_every_request(bounded_server):
    """``serve --max-tokens``: a request asking for more is refused naming the limit; one that does not say gets at
    most the limit."""
    import httpx

    url = bounded_server.url
    body = {"model": "smollm2-135m-instruct-q4_1", "messages": [{"role": "user", "content": "Count to fifty."}]}
    refused = httpx.post(f"{url}/v1/chat/completions", json={**body, "max_tokens": 9}, timeout=60)
    assert refused.status_code == 400 and "above this server's limit of 8" in refused.json()["error"]["message"]
    answered = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert answered.status_code == 200 and answered.json()["usage"]["completion_tokens"] <= 8
