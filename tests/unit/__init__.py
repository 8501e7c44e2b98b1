"""Tests of one module or function, without the local stack."""
