"""nurture's own errors: one base, `NurtureError`, with the field it is about.

    Exception
    └── NurtureError            .message, .field (None when the error is about no field)
        └── InvalidValue        also a ValueError: a value refused (a profile field, a stage,
                                an event kind, a reason, caps, a user or key name...)

`str(error)` is `"field: message"` (or the message alone without a field), the words the
command line prints. The API answers a 422 whose `errors` name `.field`; the forms and the
CLI show `.message` beside it: nobody splits the text again. See "Errors" in the README.
"""

from __future__ import annotations


class NurtureError(Exception):
    """The base of nurture's errors: `message`, and the `field` it is about, if any."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


class InvalidValue(NurtureError, ValueError):
    """A value refused, naming its field (`contacts.clean_profile`, `feedback.move_stage`...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)
