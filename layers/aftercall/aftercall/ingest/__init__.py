"""Ingest from agent platforms: signed webhooks and Amazon Connect become ``Conversation Ended`` events.

``signatures`` verifies each vendor's scheme over the raw body; one module per platform
(``vapi``, ``retell``, ``elevenlabs``, ``connect``, ``generic``) maps its payload to the contract;
``normalise`` is the single entry point for the webhook service and ``aftercall emit --from``;
``service`` verifies, maps and puts the event on the bus. See docs/ingest.md.
"""
