"""Masking for personal data, so logs and errors carry enough to debug and no raw PII."""

from __future__ import annotations

import re

#: An email address inside free text.
_EMAIL_IN_TEXT = re.compile(r"[^\s@<>\"'(),;:\[\]]+@[^\s@<>\"'(),;:\[\]]+\.[A-Za-z]{2,}")
#: A run of digits that may be a phone number: optional +, digits with spaces, dots, dashes, brackets.
_DIGITS_IN_TEXT = re.compile(r"\+?\(?\d[\d\s().\-]*\d")


def mask_phone(number: str | None) -> str | None:
    """``+14155550100`` → ``+141****0100``: country and area hint plus the last four digits."""
    if not number:
        return number
    if len(number) <= 7:
        return "*" * len(number)
    return f"{number[:4]}{'*' * (len(number) - 8)}{number[-4:]}"


def mask_email(address: str | None) -> str | None:
    """``jane.doe@example.com`` → ``j***@example.com``."""
    if not address or "@" not in address:
        return address
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def redact(text: str) -> str:
    """Mask the email addresses and phone numbers in free text, such as a CRM's error message.

    A run counts as a phone number when it starts with ``+`` and holds at least 7 digits, or holds
    at least 9 (so ids, years and HTTP statuses stay readable).
    """

    def phone(match: re.Match[str]) -> str:
        found = match.group()
        digits = "".join(ch for ch in found if ch.isdigit())
        if found.startswith("+") and len(digits) >= 7:
            return mask_phone("+" + digits) or ""
        if len(digits) >= 9:  # no country code to show: keep only the last four digits
            return "*" * (len(digits) - 4) + digits[-4:]
        return found

    masked = _EMAIL_IN_TEXT.sub(lambda match: mask_email(match.group()) or "", text)
    return _DIGITS_IN_TEXT.sub(phone, masked)


#: A word that may be a secret: 20+ characters of a token's alphabet holding both letters and digits.
_TOKEN_IN_TEXT = re.compile(r"(?<![\w\-./+=])[\w\-./+=]{20,}(?![\w\-./+=])")
#: How much of someone else's text (the End function's exception) a log line or error message keeps.
MAX_UNTRUSTED_CHARS = 300


def _mask_token(match: re.Match[str]) -> str:
    word = match.group()
    if any(ch.isdigit() for ch in word) and any(ch.isalpha() for ch in word):
        return f"{word[:3]}…[{len(word)} chars]"
    return word


def redact_untrusted(text: str, limit: int = MAX_UNTRUSTED_CHARS) -> str:
    """Text we did not write (the End function's exception, a vendor's error): emails, phone
    numbers and secret-looking words masked, then cut to ``limit`` characters.

    The user's code can put anything in an exception, including the state it was reading; this
    keeps enough to recognise the error and none of the values.
    """
    masked = _TOKEN_IN_TEXT.sub(_mask_token, redact(text))
    return masked if len(masked) <= limit else masked[:limit] + "…"


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` for an exception raised by code we did not write, redacted."""
    return redact_untrusted(f"{type(exc).__name__}: {exc}")


def where_raised(exc: BaseException, frames: int = 5) -> list[str]:
    """The innermost frames as ``file:line in function``: where to look, with no values."""
    import traceback

    summary = traceback.extract_tb(exc.__traceback__)[-frames:]
    return [f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}" for frame in summary]
