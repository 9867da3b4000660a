"""The OAuth 2 resource-server side: token verifiers, the principal, and the ASGI auth layer."""
