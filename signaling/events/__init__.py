"""Room events: danmaku chat, gifts, likes, counts and moderation over one WebSocket per client."""
