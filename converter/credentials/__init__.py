"""The upstream API's own credentials: token exchange, client credentials, the spec's securitySchemes.

The caller's token is never forwarded: a call carries what `upstream.auth` and
`upstream.credentials` say, placed as the operation's `security` requirement says.
Entry point: `UpstreamCredentials.send` (see converter.credentials.upstream).
"""

from __future__ import annotations

from converter.config.credentials import (
    BasicCredential,
    ClientCredentialsSettings,
    CredentialsSettings,
    OAuthCredential,
    TokenExchangeSettings,
    UpstreamAuthSettings,
)
from converter.credentials.client_credentials import ClientCredentials
from converter.credentials.errors import CredentialError, TokenEndpointError
from converter.credentials.schemes import SchemeCompiler, SecurityPlan, missing_credentials
from converter.credentials.stats import CredentialStats, combined_stats
from converter.credentials.token_exchange import TokenExchanger
from converter.credentials.tokens import IssuedToken
from converter.credentials.upstream import IDEMPOTENT_METHODS, Caller, CredentialParts, UpstreamCredentials

__all__ = [
    "IDEMPOTENT_METHODS",
    "BasicCredential",
    "Caller",
    "ClientCredentials",
    "ClientCredentialsSettings",
    "CredentialError",
    "CredentialParts",
    "CredentialStats",
    "CredentialsSettings",
    "IssuedToken",
    "OAuthCredential",
    "SchemeCompiler",
    "SecurityPlan",
    "TokenEndpointError",
    "TokenExchangeSettings",
    "TokenExchanger",
    "UpstreamAuthSettings",
    "UpstreamCredentials",
    "combined_stats",
    "missing_credentials",
]
