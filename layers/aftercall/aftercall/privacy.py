"""Masking for personal data, so logs and errors carry enough to debug and no raw PII."""

from __future__ import annotations


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
