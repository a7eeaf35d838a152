"""Amazon Personalize, provider-style: hook, waiters, triggers, operators, sensors (the amazon provider has none)."""
