"""Test helpers: realistic events, a Lambda context, and builders for the local stack."""
