"""Client side: Client (sync facade over an async core), Future, wait, as_completed."""
