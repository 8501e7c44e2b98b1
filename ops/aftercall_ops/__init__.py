"""aftercall operator tooling (CLI, local stack, fake CRM): never shipped to Lambda."""
