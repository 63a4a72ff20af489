"""A viewer in its own process, so a test can freeze it (SIGSTOP) like a stalled client."""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from loadtests.webrtc.peer import configure_ice
from tests.integration.peers import Viewer


async def main(base: str, room: str, token: str) -> None:
    configure_ice(["127.0.0.1"])
    async with aiohttp.ClientSession() as http:
        viewer = Viewer(base, room, token)
        await viewer.watch(http)
        await asyncio.wait_for(viewer.first_video.wait(), 10)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if line.strip() == b"count":
                print(f"frames {len(viewer.video_times)}", flush=True)
        await viewer.stop(http)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
