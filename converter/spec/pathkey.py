"""Path keys as real documents write them: with a query string or a fragment inside the key.

OpenAPI path keys are paths (OAS 3.x §4.8.8), but documents in the wild put more in them:
weatherbit.io writes `/forecast/daily?postal_code={postal_code}`, flickr.com `/rest?method=...`,
AWS tells operations on one path apart with `/#X-Amz-Target=...`. A URL built by appending the
key to the server verbatim is malformed (a second `?` in the query) or loses the query parameters
in a fragment that is never sent (issue 20). The key is split here once: the path template, the
query pairs it carries (literal or templated), and the fragment, which is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

TEMPLATE_VAR: Final = re.compile(r"{([^{}/]+)}")


@dataclass(frozen=True, slots=True)
class PathKey:
    """A path key split into what goes into a request's path, its query, and what is never sent."""

    path: str
    query: str  # after the first '?' (before any '#'); '' when the key has none
    fragment: str  # after the first '#'; never sent

    @property
    def path_variables(self) -> list[str]:
        return TEMPLATE_VAR.findall(self.path)

    @property
    def query_variables(self) -> list[str]:
        return TEMPLATE_VAR.findall(self.query)

    @property
    def fragment_variables(self) -> list[str]:
        return TEMPLATE_VAR.findall(self.fragment)


def split_path_key(key: str) -> PathKey:
    """Split `key` at its first '#' (the fragment) and then at its first '?' (the query)."""
    before, _, fragment = key.partition("#")
    path, _, query = before.partition("?")
    return PathKey(path, query, fragment)
