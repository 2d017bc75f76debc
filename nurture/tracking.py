"""Signed links in an email (unsubscribe, open pixel, clicks), each bound to one message."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
from functools import cached_property

from itsdangerous import BadSignature, Signer

_HREF = re.compile(r'href="(https?://[^"]+)"')


class _Signer(Signer):
    """A Signer that derives its key once, not on every signature (the hot path signs four
    links per email)."""

    @cached_property
    def _derived(self) -> bytes:
        return super().derive_key()

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        return self._derived if secret_key is None else super().derive_key(secret_key)


class Links:
    def __init__(self, secret: str, base_url: str) -> None:
        self.secret = secret
        self._unsubscribe = _Signer(
            secret, salt="nurture.unsubscribe", digest_method=hashlib.sha256
        )
        self._open = _Signer(secret, salt="nurture.open", digest_method=hashlib.sha256)
        self._click = _Signer(secret, salt="nurture.click", digest_method=hashlib.sha256)
        self._confirm = _Signer(secret, salt="nurture.confirm", digest_method=hashlib.sha256)
        self.base_url = base_url.rstrip("/")

    def unsubscribe_url(self, message_key: str) -> str:
        return f"{self.base_url}/u/{self._unsubscribe.sign(message_key).decode()}"

    def unsubscribe_key(self, token: str) -> str | None:
        """The message a token belongs to, or None when it is forged or altered."""
        return _unsign(self._unsubscribe, token)

    def confirm_url(self, consent_id: int) -> str:
        """The double opt-in link for one consent record."""
        return f"{self.base_url}/f/confirm/{self._confirm.sign(str(consent_id)).decode()}"

    def confirm_id(self, token: str) -> int | None:
        value = _unsign(self._confirm, token)
        return int(value) if value is not None and value.isdigit() else None

    def open_url(self, message_key: str) -> str:
        return f"{self.base_url}/o/{self._open.sign(message_key).decode()}"

    def open_key(self, token: str) -> str | None:
        return _unsign(self._open, token)

    def click_url(self, message_key: str, target: str) -> str:
        encoded = base64.urlsafe_b64encode(target.encode()).decode().rstrip("=")
        return f"{self.base_url}/c/{self._click.sign(f'{message_key}~{encoded}').decode()}"

    def click_target(self, token: str) -> tuple[str, str] | None:
        """(message key, the link that was in that email), or None when forged or altered."""
        value = _unsign(self._click, token)
        if value is None or "~" not in value:
            return None
        key, encoded = value.split("~", 1)
        try:
            target = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return key, target

    def track(self, body: str, message_key: str, unsubscribe_url: str) -> str:
        """HTML with each web link turned into a signed click link, and an open pixel."""

        def swap(match: re.Match[str]) -> str:
            target = html.unescape(match.group(1))
            if target == unsubscribe_url:
                return match.group(0)
            return f'href="{html.escape(self.click_url(message_key, target))}"'

        tracked = _HREF.sub(swap, body)
        pixel = (
            f'<img src="{self.open_url(message_key)}" width="1" height="1" alt="" '
            'style="display:block;border:0;width:1px;height:1px" />'
        )
        index = tracked.rfind("</body>")
        return tracked[:index] + pixel + tracked[index:] if index >= 0 else tracked + pixel


def _unsign(signer: Signer, token: str) -> str | None:
    """The signed value, only for the exact token that signing it gives.

    A base64 signature's last character carries spare bits, so a few altered characters
    still decode to the same bytes and pass `unsign`; signing is deterministic (HMAC), so
    signing the value again and comparing the whole token accepts the canonical form only.
    """
    try:
        value = signer.unsign(token)
    except BadSignature:
        return None
    if not hmac.compare_digest(signer.sign(value), token.encode()):
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None
