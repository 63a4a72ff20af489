"""Reusable asyncio WebRTC load clients: a synthetic WHIP host and lean WHEP viewers.

They run in plain asyncio processes (never inside gevent/Locust) and are
driven either as libraries or as child processes speaking JSON lines.
"""
