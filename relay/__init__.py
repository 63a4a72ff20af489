"""Media plane: rooms, publications, subscriptions and RTP forwarding.

Knows nothing of HTTP, JSON or auth; participants are seen only through
the small protocols in :mod:`relay.ports`.
"""
