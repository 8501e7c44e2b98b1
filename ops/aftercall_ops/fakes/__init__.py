"""Loopback stand-ins for the CRMs, as inconvenient as the real APIs (docs/crm.md)."""
