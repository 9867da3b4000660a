"""A browser for clients that open one to log in (mcp-remote): `BROWSER="python fake_browser.py"`.

Given the authorization URL, it logs in through the test realm's devInteractions as
`$FAKE_BROWSER_USER` (any name works there), consents, and then follows the redirect back to the
client's own callback (a loopback URL the client listens on), exactly as a user's browser would.
Each hop is appended to `$FAKE_BROWSER_LOG` when that is set.

Run: `python tests/integration/fake_browser.py URL` (exit 0 once the callback was delivered).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `tests.`

from tests.integration.authserver import AuthServer


def main(url: str) -> int:
    user = os.environ.get("FAKE_BROWSER_USER", "carol")
    log = os.environ.get("FAKE_BROWSER_LOG")
    realm = urlsplit(url)
    origin = f"{realm.scheme}://{realm.netloc}"
    hops: list[str] = []
    with httpx.Client(follow_redirects=False, timeout=20, trust_env=False) as client:
        response = client.get(url)
        for _ in range(15):
            hops.append(f"{response.request.method} {response.request.url} -> {response.status_code}")
            if response.is_redirect:
                target = urljoin(str(response.request.url), response.headers["location"])
                if not target.startswith(origin):  # back to the client: deliver the code (or the error)
                    delivered = _deliver(client, target)
                    hops.append(f"GET {target} -> {delivered.status_code}")
                    break
                response = client.get(target)
            elif response.status_code == 200 and "<form" in response.text:
                response = AuthServer._submit_interaction(client, response, user)
            else:
                hops.append(response.text[:500])
                break
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write("\n".join(hops) + "\n---\n")
    return 0


def _deliver(client: httpx.Client, target: str) -> httpx.Response:
    """The client's callback; mcp-remote opens the browser for a step-up a moment before its
    callback server listens again (a person takes seconds anyway), so a refused connection is
    tried again for up to 10 s."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return client.get(target, follow_redirects=True)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
