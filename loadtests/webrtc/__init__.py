"""The one WebRTC client library the load suite, the benchmark and the tests share.

Asyncio clients (a synthetic WHIP host, lean WHEP viewers) and what they measure with: the freeze
rule (:mod:`~loadtests.webrtc.metrics`), the VP8 payload descriptor (:mod:`~loadtests.webrtc.vp8`),
WHIP/WHEP exchanges and the ``/dev/token`` helper (:mod:`~loadtests.webrtc.signaling_client`),
token sources (:mod:`~loadtests.webrtc.tokens`, :mod:`~loadtests.webrtc.token_options`), peer
connection set-up (:mod:`~loadtests.webrtc.peer`) and child processes
(:mod:`~loadtests.webrtc.process`). They run in plain asyncio processes (never inside
gevent/Locust) and are driven either as libraries or as child processes speaking JSON lines;
aiortc internals they need live in :mod:`aiortc_bridge`, nowhere here.
"""
