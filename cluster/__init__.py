"""Scale-out: workers per host, nodes on Redis, signaling that terminates anywhere, origin -> edge pipes.

With one worker and no Redis (the default), everything here runs in memory on the one process.
"""
