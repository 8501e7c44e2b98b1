"""The fake Salesforce's SOQL subset, and Salesforce's REST error shape.

``SELECT … FROM … WHERE`` with ``=``/``!=``/``IN``, ``AND``/``OR``/parentheses, string/boolean/null
literals with SOQL escapes, ``ORDER BY … ASC|DESC``, ``LIMIT``; string comparisons ignore case,
as SOQL does. SOQL reads the database, so it sees a record the moment it is written (SOSL, which
reads the search index, does not: :mod:`aftercall_ops.fakes.salesforce_search`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def sf_error(message: str, code: str, fields: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Salesforce's REST error body: a list of ``{"message", "errorCode", "fields"}``."""
    return [{"message": message, "errorCode": code, "fields": list(fields)}]


class SalesforceError(Exception):
    """Internal: answer ``status`` with Salesforce's error body."""

    def __init__(self, status: int, message: str, code: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.body = sf_error(message, code, fields)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


# --- SOQL subset ---------------------------------------------------------------------------------

_SOQL_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:\\.|[^'\\])*')|(?P<op>!=|=)|(?P<punct>[(),])"
    r"|(?P<number>\d+)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass
class SoqlQuery:
    fields: list[str]
    sobject: str
    where: Predicate
    order_by: str | None
    descending: bool
    limit: int | None


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _SOQL_TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise SalesforceError(400, f"unexpected token at position {position}", "MALFORMED_QUERY")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _unescape(literal: str) -> str:
    body = literal[1:-1]
    out = []
    chars = iter(body)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, "")
        if escaped not in _ESCAPES:
            raise SalesforceError(400, f"Invalid string literal {literal!r}: bad escape \\{escaped}", "MALFORMED_QUERY")
        out.append(_ESCAPES[escaped])
    return "".join(out)


class _SoqlParser:
    """Recursive descent over the token list; builds a predicate over a record's fields."""

    def __init__(self, text: str, known_fields: Callable[[str], frozenset[str]]) -> None:
        self.tokens = _tokens(text)
        self.position = 0
        self.known_fields = known_fields
        self.sobject = ""

    def parse(self) -> SoqlQuery:
        self._keyword("SELECT")
        fields = [self._word()]
        while self._accept("punct", ","):
            fields.append(self._word())
        self._keyword("FROM")
        self.sobject = self._word()
        known = self.known_fields(self.sobject)
        if not known:
            raise SalesforceError(400, f"sObject type '{self.sobject}' is not supported.", "INVALID_TYPE")
        for name in fields:
            self._check_field(name)
        where: Predicate = lambda record: True  # noqa: E731 - the no-WHERE case
        if self._accept_keyword("WHERE"):
            where = self._or()
        order_by, descending = None, False
        if self._accept_keyword("ORDER"):
            self._keyword("BY")
            order_by = self._check_field(self._word())
            if self._accept_keyword("DESC"):
                descending = True
            else:
                self._accept_keyword("ASC")
        limit = None
        if self._accept_keyword("LIMIT"):
            kind, value = self._next()
            if kind != "number":
                raise SalesforceError(400, "LIMIT needs a number", "MALFORMED_QUERY")
            limit = int(value)
        if self.position != len(self.tokens):
            raise SalesforceError(400, f"unexpected token: '{self.tokens[self.position][1]}'", "MALFORMED_QUERY")
        return SoqlQuery(fields, self.sobject, where, order_by, descending, limit)

    def _or(self) -> Predicate:
        terms = [self._and()]
        while self._accept_keyword("OR"):
            terms.append(self._and())
        return lambda record: any(term(record) for term in terms)

    def _and(self) -> Predicate:
        factors = [self._factor()]
        while self._accept_keyword("AND"):
            factors.append(self._factor())
        return lambda record: all(factor(record) for factor in factors)

    def _factor(self) -> Predicate:
        if self._accept("punct", "("):
            inner = self._or()
            self._expect("punct", ")")
            return inner
        field = self._check_field(self._word())
        if self._accept_keyword("IN"):
            self._expect("punct", "(")
            values = [self._value()]
            while self._accept("punct", ","):
                values.append(self._value())
            self._expect("punct", ")")
            return lambda record: any(_equal(record.get(field), value) for value in values)
        kind, op = self._next()
        if kind != "op":
            raise SalesforceError(400, f"expected a comparison after {field}", "MALFORMED_QUERY")
        value = self._value()
        if op == "=":
            return lambda record: _equal(record.get(field), value)
        return lambda record: not _equal(record.get(field), value)

    def _value(self) -> Any:
        kind, token = self._next()
        if kind == "string":
            return _unescape(token)
        if kind == "number":
            return int(token)
        if kind == "word" and token.lower() in ("true", "false"):
            return token.lower() == "true"
        if kind == "word" and token.lower() == "null":
            return None
        raise SalesforceError(400, f"unexpected value: '{token}'", "MALFORMED_QUERY")

    def _check_field(self, name: str) -> str:
        if name not in self.known_fields(self.sobject):
            raise SalesforceError(400, f"No such column '{name}' on entity '{self.sobject}'.", "INVALID_FIELD")
        return name

    def _next(self) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise SalesforceError(400, "unexpected end of query", "MALFORMED_QUERY")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def _word(self) -> str:
        kind, value = self._next()
        if kind != "word":
            raise SalesforceError(400, f"unexpected token: '{value}'", "MALFORMED_QUERY")
        return value

    def _keyword(self, word: str) -> None:
        if not self._accept_keyword(word):
            found = self.tokens[self.position][1] if self.position < len(self.tokens) else "end of query"
            raise SalesforceError(400, f"expected {word}, found '{found}'", "MALFORMED_QUERY")

    def _accept_keyword(self, word: str) -> bool:
        if self.position < len(self.tokens):
            kind, value = self.tokens[self.position]
            if kind == "word" and value.upper() == word:
                self.position += 1
                return True
        return False

    def _accept(self, kind: str, value: str) -> bool:
        if self.position < len(self.tokens) and self.tokens[self.position] == (kind, value):
            self.position += 1
            return True
        return False

    def _expect(self, kind: str, value: str) -> None:
        if not self._accept(kind, value):
            raise SalesforceError(400, f"expected '{value}'", "MALFORMED_QUERY")


def _equal(actual: Any, expected: Any) -> bool:
    """SOQL equality: text ignores case; null equals only a missing or null value."""
    if expected is None or actual is None:
        return actual is None and expected is None
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.casefold() == expected.casefold()
    return bool(actual == expected)
