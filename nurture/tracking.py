"""Signed tokens for the links in an email, bound to one message."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer


class Links:
    def __init__(self, secret: str, base_url: str) -> None:
        self._unsubscribe = URLSafeSerializer(secret, salt="nurture.unsubscribe")
        self.base_url = base_url.rstrip("/")

    def unsubscribe_url(self, message_key: str) -> str:
        return f"{self.base_url}/u/{self._unsubscribe.dumps(message_key)}"

    def unsubscribe_key(self, token: str) -> str | None:
        """The message a token belongs to, or None when it is forged or altered."""
        try:
            value = self._unsubscribe.loads(token)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None
