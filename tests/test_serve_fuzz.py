"""Property-based test of the whole review API: Schemathesis reads the app's OpenAPI schema and
sends generated parameters and bodies to every route, in process (ASGI). No response may be a
500, and each must match what the schema documents (status, content type, body).

Bounded in time: a fixed number of examples per route, generated deterministically (the same
cases in CI as here), with a real cached scan so render/annotated/detections get past 404.
"""

from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency")
from hypothesis import HealthCheck, settings  # noqa: E402  (after the skip: hypothesis comes with schemathesis)
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from rarespot.serve.app import create_app  # noqa: E402
from rarespot.serve.settings import ServeSettings  # noqa: E402
from serve_fixtures import FakePredictor, png_bytes, scan_16bit  # noqa: E402

HOST = "localhost"
APP = create_app(FakePredictor(), ServeSettings(warmup=False, max_upload_mb=1))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers={"host": HOST})

# One scan in the cache, uploaded as the fuzzer's client (same address, no cookie).
_client = TestClient(APP, base_url=f"http://{HOST}")
SCAN_ID = _client.post("/api/detect", files={"file": ("seed.png", png_bytes(scan_16bit(48, 40)))}).json()["id"]
_pick = random.Random(0)


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_route_fails_or_breaks_its_schema(case):
    if "scan_id" in (case.path_parameters or {}) and _pick.random() < 0.7:
        # Most cases reach the filters, not the 404. (A new dict, so Schemathesis re-checks the case's validity.)
        case.path_parameters = {**case.path_parameters, "scan_id": SCAN_ID}
    # Every check runs but one: "schema-valid data must be accepted" cannot hold for uploads, whose
    # schema says "a file" while the server rightly refuses files that are not scans (400/413/415).
    case.call_and_validate(headers={"host": HOST}, excluded_checks=[positive_data_acceptance])


# Random strings rarely parse as filter specs, so the chains themselves get a grammar of their own:
# real filter names and parameter names with any number (huge, tiny, negative, non-finite).
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rarespot.filters import FILTER_ALIASES, FILTERS, PARAM_ALIASES, PARAM_BOUNDS  # noqa: E402

_NAMES = sorted(FILTERS) + sorted(FILTER_ALIASES)
_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**13), 10**13),
    st.sampled_from([0, 1, 2, 32, 33, 64, 6000, 1e12, -1, 0.5, 99.5, 100, 1e-9]),
)


@st.composite
def _step(draw):
    name = draw(st.sampled_from(_NAMES))
    real = FILTER_ALIASES.get(name, name)
    keys = sorted(PARAM_BOUNDS.get(real, {})) + sorted(PARAM_ALIASES.get(real, {}))
    params = draw(st.dictionaries(st.sampled_from(keys), _NUMBERS, max_size=3)) if keys else {}
    return name + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")


@given(steps=st.lists(_step(), min_size=1, max_size=14))
@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_any_filter_chain_renders_or_is_refused_with_422(steps):
    spec = ",".join(steps)
    response = _client.get(f"/api/scans/{SCAN_ID}/render", params={"view": spec})
    assert response.status_code in (200, 422), (spec, response.status_code, response.text[:200])
    if response.status_code == 422:
        assert response.json()["detail"][0]["msg"]
    else:
        assert response.headers["content-type"] == "image/png"
