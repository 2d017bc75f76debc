"""Machine engagement: opens by mail-privacy proxies and clicks by security scanners.

Pure: given what a request looked like and when the email went, say why it is a machine,
or None. Such events are stored, flagged, and never scored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

SCANNER_AGENTS = re.compile(
    r"barracuda|mimecast|proofpoint|symantec|messagelabs|trend ?micro|forcepoint|safelinks|"
    r"microsoft office|python-requests|python-urllib|curl/|wget|go-http-client|java/|okhttp|"
    r"headless|phantomjs|\bbot\b|spider|crawler|scanner|urldefense|sophos|fortinet|zscaler",
    re.IGNORECASE,
)
PROXY_AGENTS = re.compile(r"googleimageproxy|yahoomailproxy|ggpht\.com|outlook-ios-proxy", re.I)
#: Apple Mail Privacy Protection fetches with this bare agent, whatever the person does.
APPLE_PRIVACY_AGENT = "Mozilla/5.0"
CLICK_AFTER_DELIVERY = timedelta(seconds=10)
CLICK_BURST = timedelta(seconds=1)
OPEN_AFTER_DELIVERY = timedelta(seconds=3)


def machine_click(
    *,
    method: str,
    user_agent: str,
    sent_at: datetime,
    now: datetime,
    other_clicks: Sequence[datetime] = (),
) -> str | None:
    """Why this click is a machine's, or None for a person's."""
    if method.upper() == "HEAD":
        return "HEAD request"
    if not user_agent.strip():
        return "no user agent"
    if SCANNER_AGENTS.search(user_agent):
        return "security scanner user agent"
    if now - sent_at < CLICK_AFTER_DELIVERY:
        return f"clicked within {CLICK_AFTER_DELIVERY.seconds} s of delivery"
    if any(abs(now - other) < CLICK_BURST for other in other_clicks):
        return "several links of one email clicked within a second"
    return None


def machine_open(*, user_agent: str, sent_at: datetime, now: datetime) -> str | None:
    """Why this open is a machine's (a privacy proxy or a prefetch), or None."""
    if PROXY_AGENTS.search(user_agent):
        return "mail privacy proxy"
    if user_agent.strip() == APPLE_PRIVACY_AGENT:
        return "Apple Mail Privacy Protection"
    if SCANNER_AGENTS.search(user_agent):
        return "security scanner user agent"
    if now - sent_at < OPEN_AFTER_DELIVERY:
        return "opened within seconds of delivery"
    return None
