"""The fake Salesforce's SOSL: ``FIND {…} IN PHONE|EMAIL|ALL FIELDS RETURNING Object(fields …), …``.

What Salesforce documents and this fake keeps:

* "Use the Salesforce Object Search Language (SOSL) to construct text-based search queries against
  the search index": the org hands over only records already indexed (``INDEX_LAG_SECONDS``).
* Phone fields hold what was typed ("Salesforce preserves whichever phone number format you
  enter"); a phone search term is digits ("Example of phoneNumber format: 4155551212"), and
  matches a phone field whose digits are those digits: ``4155550134`` finds ``(415) 555-0134``
  and ``415.555.0134`` but not ``+1 415-555-0134`` (``14155550134``), so a client asks for each form.
* Reserved characters ``? & | ! { } [ ] ( ) ^ ~ * : \\ " ' + -`` must be escaped with a backslash
  in a search term; an unescaped one (other than a phrase's quotes) is a ``MALFORMED_SEARCH``.
* Each ``RETURNING`` object takes a field list and optional ``WHERE``, ``ORDER BY`` and ``LIMIT``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from aftercall_ops.fakes.salesforce_soql import SalesforceError, _SoqlParser

_SOSL = re.compile(
    r"^\s*FIND\s*\{(?P<terms>(?:\\.|[^\\}])*)\}\s*IN\s+(?P<scope>ALL|PHONE|EMAIL|NAME)\s+FIELDS\s+"
    r"RETURNING\s+(?P<returning>.+?)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_RETURNING = re.compile(r"\s*(?P<object>[A-Za-z_][A-Za-z0-9_]*)\s*\((?P<spec>[^()]*)\)\s*(?:,|$)")
_SPEC = re.compile(r"^(?P<fields>.+?)(?P<rest>\s+(?:WHERE|ORDER\s+BY|LIMIT)\s.*)?$", re.IGNORECASE | re.DOTALL)
_RESERVED = set("?&|!{}[]()^~*:\\\"'+-")
_NOT_DIGITS = re.compile(r"\D")
PHONE_FIELDS = ("Phone", "MobilePhone")
EMAIL_FIELDS = ("Email", "SuppliedEmail")


def _malformed(message: str) -> SalesforceError:
    return SalesforceError(400, message, "MALFORMED_SEARCH")


def search_terms(text: str) -> list[str]:
    """The ``OR``-ed terms inside ``FIND {…}``: quoted phrases or words, escapes undone."""
    terms: list[str] = []
    current: list[str] = []
    quoted = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char in _RESERVED:
            raise _malformed(f"search term has an unescaped reserved character {char!r}: escape it with a backslash")
        elif char.isspace() and not quoted:
            word = "".join(current)
            current = []
            if word and word.upper() != "OR":
                terms.append(word)
        else:
            current.append(char)
        index += 1
    if quoted:
        raise _malformed("unbalanced quotes in the search term")
    word = "".join(current)
    if word and word.upper() != "OR":
        terms.append(word)
    return terms


def _matches(record: Mapping[str, Any], terms: list[str], scope: str) -> bool:
    phones = [_NOT_DIGITS.sub("", str(record.get(f) or "")) for f in PHONE_FIELDS] if scope in ("ALL", "PHONE") else []
    emails = [str(record.get(f) or "").casefold() for f in EMAIL_FIELDS] if scope in ("ALL", "EMAIL") else []
    for term in terms:
        digits = _NOT_DIGITS.sub("", term)
        if digits and digits in phones:
            return True
        if term.casefold() in emails:
            return True
    return False


def run_search(
    sosl: str, indexed: Mapping[str, list[dict[str, Any]]], known_fields: Callable[[str], frozenset[str]]
) -> list[dict[str, Any]]:
    """Records matching ``sosl`` among the ``indexed`` ones, per ``RETURNING`` object, tagged ``_type``."""
    found = _SOSL.match(sosl)
    if found is None:
        raise _malformed("expected FIND {term} IN PHONE|EMAIL|ALL|NAME FIELDS RETURNING Object(fields)")
    terms = search_terms(found["terms"])
    if not terms:
        raise _malformed("search term must be longer than one character")
    scope = found["scope"].upper()
    results: list[dict[str, Any]] = []
    returning = found["returning"]
    position = 0
    while position < len(returning):
        part = _RETURNING.match(returning, position)
        if part is None:
            raise _malformed(f"unexpected RETURNING clause near {returning[position:][:40]!r}")
        position = part.end()
        spec = _SPEC.match(part["spec"].strip())
        if spec is None:
            raise _malformed(f"{part['object']}: a RETURNING object needs a field list")
        sobject = part["object"]
        if sobject not in indexed:
            raise SalesforceError(400, f"sObject type '{sobject}' is not supported.", "INVALID_TYPE")
        # The per-object clause is SOQL's: parse it as a query over that object.
        soql = f"SELECT {spec['fields']} FROM {sobject}{spec['rest'] or ''}"  # noqa: S608 - parsed, never run
        parsed = _SoqlParser(soql, known_fields).parse()
        hits = [r for r in indexed[sobject] if _matches(r, terms, scope) and parsed.where(r)]
        if parsed.order_by is not None:
            key = parsed.order_by
            hits.sort(key=lambda r: (str(r.get(key) or ""), r["_seq"]), reverse=parsed.descending)
        if parsed.limit is not None:
            hits = hits[: parsed.limit]
        results += [{name: r.get(name) for name in parsed.fields} | {"_type": sobject} for r in hits]
    return results
