"""Signed tokens for the links in an email, bound to one message."""

from __future__ import annotations

import hashlib

from itsdangerous import BadSignature, Signer


class Links:
    def __init__(self, secret: str, base_url: str) -> None:
        self._unsubscribe = Signer(secret, salt="nurture.unsubscribe", digest_method=hashlib.sha256)
        self.base_url = base_url.rstrip("/")

    def unsubscribe_url(self, message_key: str) -> str:
        return f"{self.base_url}/u/{self._unsubscribe.sign(message_key).decode()}"

    def unsubscribe_key(self, token: str) -> str | None:
        """The message a token belongs to, or None when it is forged or altered."""
        try:
            return self._unsubscribe.unsign(token).decode()
        except (BadSignature, UnicodeDecodeError):
            return None
