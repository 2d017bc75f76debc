"""What the public pages (unsubscribe, form confirmation) say, in the person's language.

English and French; a page picks the first language it knows among the contact's
`language` (`fr-CA` counts as `fr`), then the form's, then English.
"""

from __future__ import annotations

from collections.abc import Container

DEFAULT = "en"

UNSUBSCRIBE = {
    "en": {
        "title": "Email preferences",
        "for": "For {email}, from {sender}:",
        "unsubscribe": "Unsubscribe from all these emails",
        "fewer": "Receive fewer emails (at most one a week)",
        "pause": "Pause for 30 days",
        "done_unsubscribe_title": "You are unsubscribed",
        "done_unsubscribe": "{email} will receive no more emails from {sender}.",
        "done_fewer_title": "Fewer emails it is",
        "done_fewer": "{email} will receive at most one email a week from {sender}.",
        "done_pause_title": "Paused for 30 days",
        "done_pause": "{sender} will not write to {email} for the next 30 days.",
    },
    "fr": {
        "title": "Vos préférences d'emails",
        "for": "Pour {email}, de la part de {sender} :",
        "unsubscribe": "Me désinscrire de tous ces emails",
        "fewer": "Recevoir moins d'emails (un par semaine au plus)",
        "pause": "Faire une pause de 30 jours",
        "done_unsubscribe_title": "Vous êtes désinscrit",
        "done_unsubscribe": "{email} ne recevra plus d'emails de {sender}.",
        "done_fewer_title": "C'est noté : moins d'emails",
        "done_fewer": "{email} recevra au plus un email par semaine de {sender}.",
        "done_pause_title": "Pause de 30 jours",
        "done_pause": "{sender} n'écrira pas à {email} pendant les 30 prochains jours.",
    },
}


def pick(*languages: str | None, known: Container[str] = ("en", "fr")) -> str:
    """The first of `languages` (a BCP 47 tag such as `fr-CA`, or None) that the pages
    speak, by its primary subtag; English when none."""
    for language in languages:
        code = (language or "").replace("_", "-").split("-")[0].strip().lower()
        if code and code in known:
            return code
    return DEFAULT
