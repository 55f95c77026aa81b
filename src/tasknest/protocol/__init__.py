"""Wire protocol: framing, the message catalogue, serialization, comms, authentication."""
