"""python examples/connect.py [URL]: a request answered, then three events delivered once, in order."""
import asyncio
import sys

import tether


async def main(url: str) -> None:
    async with tether.connect(url, agent_id="echo", token="secret") as client:
        print((await client.send("hello")).content)  # echo: hello
        received = 0
        async for event in client.events():
            if isinstance(event, tether.Delivered) and event.kind == "message":
                print(f"#{event.seq} {event.data['text']}")  # each sequence once, in order
                received += 1
                if received == 3:
                    await client.disconnect()
            elif isinstance(event, tether.Lost):
                print(f"lost {event.first}..={event.last}")  # reported, never silently
            elif isinstance(event, tether.Closed):
                print(f"closed: {event.reason}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765/ws"))
