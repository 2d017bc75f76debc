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
    """A Signer that derives its key once, not on every signature, and signs on the hot path
    with a keyed HMAC prepared once (`fast`): the same token as `sign`, a test checks it."""

    @cached_property
    def _derived(self) -> bytes:
        return super().derive_key()

    @cached_property
    def _mac(self) -> hmac.HMAC:
        return hmac.new(self._derived, digestmod=hashlib.sha256)

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        return self._derived if secret_key is None else super().derive_key(secret_key)

    def fast(self, value: str) -> str:
        """`sign(value)` as text: value, separator, the URL-safe base64 HMAC-SHA256."""
        mac = self._mac.copy()
        mac.update(value.encode())
        signature = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()
        return f"{value}{self.sep.decode()}{signature}"


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
        return f"{self.base_url}/u/{self._unsubscribe.fast(message_key)}"

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
        return f"{self.base_url}/o/{self._open.fast(message_key)}"

    def open_key(self, token: str) -> str | None:
        return _unsign(self._open, token)

    def click_url(self, message_key: str, target: str) -> str:
        return self._click_url(message_key, _encoded(target))

    def _click_url(self, message_key: str, encoded: str) -> str:
        return f"{self.base_url}/c/{self._click.fast(f'{message_key}~{encoded}')}"

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
            found = match.group(1)
            target = _targets.get(found)
            if target is None:
                if len(_targets) > 4096:
                    _targets.clear()
                unescaped = html.unescape(found)
                target = _targets[found] = (unescaped, _encoded(unescaped))
            if target[0] == unsubscribe_url:
                return match.group(0)
            return f'href="{html.escape(self._click_url(message_key, target[1]))}"'

        tracked = _HREF.sub(swap, body)
        pixel = (
            f'<img src="{self.open_url(message_key)}" width="1" height="1" alt="" '
            'style="display:block;border:0;width:1px;height:1px" />'
        )
        index = tracked.rfind("</body>")
        return tracked[:index] + pixel + tracked[index:] if index >= 0 else tracked + pixel


#: A link as it appears in the HTML -> (the link, its base64 form in a click token): the
#: links of a template are few and repeat in every email of it.
_targets: dict[str, tuple[str, str]] = {}


def _encoded(target: str) -> str:
    return base64.urlsafe_b64encode(target.encode()).decode().rstrip("=")


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
