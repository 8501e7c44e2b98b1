"""Data contracts: the ``Conversation Ended`` event and what the runtime records about it."""
