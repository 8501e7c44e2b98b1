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
