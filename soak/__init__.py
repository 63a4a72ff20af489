"""The soak: a bounded run of hosts, churning viewers, chat and PK cycles against one gateway, judged flat.

``python -m soak.run --duration 30m`` (``make soak DURATION=30m``). :mod:`soak.workload` drives the load
suite's asyncio agent (``loadtests.agent``: synthetic hosts, lean viewers, room-event clients, PK hosts);
:mod:`soak.sampler` reads the gateway's RSS, fds, threads and CPU from ``/proc`` and its asyncio tasks and
event-loop lag from ``/metrics``; :mod:`soak.verdict` fits a least-squares line to each series after the
warm-up and calls it flat when its slope stays within a bound; :mod:`soak.report` writes the folder
(samples, plots, verdict). Documented in ``docs/soak.md``.
"""
