"""Phone numbers as people write them: one E.164 form to key on, and the forms CRMs search by.

Events may carry a number in E.164 (``+14155550134``) or, from platforms and agents that drop the
country code, as dialled nationally (``(415) 555-0134``). CRMs hold numbers as someone typed
them. ``phonenumberslite`` (Google's libphonenumber metadata without the geocoder and carrier
data, so the layer stays small) turns both into E.164, using ``DefaultPhoneRegion`` for numbers
without ``+``; the adapters then search by what each CRM itself normalises (HubSpot's
digits-only national number, Salesforce's phone fields, Zendesk's user search).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

_NOT_DIGITS = re.compile(r"\D")
#: Two-letter region codes libphonenumber knows ("US", "GB", "DE", ...).
REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)


@dataclass(frozen=True)
class Phone:
    """A caller's number in the forms the CRMs are searched by."""

    e164: str
    #: Country calling code, digits only ("1", "44").
    country_code: str
    #: The national significant number, digits only, without trunk prefix ("4155550134", "2079460958").
    national: str

    @property
    def national_dialled(self) -> str:
        """The number as dialled at home: with the trunk ``0`` where the country uses one (UK, DE, FR, ...)."""
        prefix = phonenumbers.PhoneMetadata.metadata_for_region(region_of(self) or "")
        trunk = prefix.national_prefix if prefix is not None and prefix.national_prefix else ""
        return f"{trunk}{self.national}"


def region_of(phone: Phone) -> str | None:
    """The main region of the number's country code ("US" for +1), to read numbers typed without it."""
    region = phonenumbers.region_code_for_country_code(int(phone.country_code))
    return None if region == phonenumbers.UNKNOWN_REGION else region


def check_region(region: str | None) -> str | None:
    """``DefaultPhoneRegion`` as libphonenumber wants it (upper case), or ``ValueError`` naming it."""
    if region is None or not region.strip():
        return None
    code = region.strip().upper()
    if code not in REGIONS:
        raise ValueError(f"{region!r} is not a two-letter region code libphonenumber knows (such as US, GB, DE)")
    return code


def parse_phone(raw: str | None, default_region: str | None = None) -> Phone | None:
    """The number in E.164 and its national forms; ``None`` when it cannot be read as a possible number.

    A number starting with ``+`` (or ``00``) needs no region; one without is read as dialled in
    ``default_region`` (``None``: such numbers stay unread).
    """
    if not raw or not raw.strip():
        return None
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    national = phonenumbers.national_significant_number(number)
    return Phone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        country_code=str(number.country_code),
        national=national,
    )


def normalise_phone(raw: str | None, default_region: str | None = None) -> str | None:
    """E.164 for ``raw`` when it can be read, else the digits people typed (with ``+`` if they did).

    Keeps an unreadable number usable as a key instead of dropping the caller.
    """
    if raw is None:
        return None
    phone = parse_phone(raw, default_region)
    if phone is not None:
        return phone.e164
    digits = _NOT_DIGITS.sub("", raw)
    return ("+" if raw.strip().startswith("+") else "") + digits if digits else None


def digits(value: str) -> str:
    """Only the digits of ``value``: the form HubSpot's calculated phone properties hold."""
    return _NOT_DIGITS.sub("", value)
