"""Why a call got no upstream credentials; each becomes one clear tool error, never a call without.

```
ConverterError
├── UpstreamError
│   └── TokenEndpointError   the token endpoint is down, slow, refusing or answered nonsense
└── CredentialError          no credentials can be given (none configured, no caller token)
```

Messages name the endpoint, the client and the OAuth error code; never a token or a secret.
"""

from __future__ import annotations

from converter.errors import ConverterError, UpstreamError


class TokenEndpointError(UpstreamError):
    """A token request failed: carries `.url` (the endpoint), `.status` and `.error` (OAuth code)."""

    def __init__(self, message: str, *, url: str, status: int | None = None, error: str | None = None,
                 reason: str = "refused") -> None:
        super().__init__(message, method="POST", url=url, status=status)
        self.error = error
        self.reason = reason  # unreachable | timeout | refused | invalid_response: a metrics label


class CredentialError(ConverterError):
    """An operation's security requirement cannot be met for this call."""

    def __init__(self, message: str, *, tool: str | None = None, reason: str = "not_configured") -> None:
        super().__init__(message)
        self.tool = tool
        self.reason = reason  # not_configured | no_caller_token | caller_token_expired | unusable: a log field
