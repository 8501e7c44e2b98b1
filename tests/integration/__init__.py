"""Tests against real protocol peers on loopback: the moto server, the fake CRMs, HTTP servers."""
