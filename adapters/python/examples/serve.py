"""python examples/serve.py [PORT]: a gateway with an echo agent; each new session gets three events."""
import asyncio
import sys

import tether


async def echo(request: tether.Request) -> str:
    return f"echo: {request.content}"  # the request's `final` answer


async def main(port: int) -> None:
    async with tether.serve("127.0.0.1", port, token="secret", agents={"echo": echo}) as gateway:
        print(f"listening on {gateway.url}", flush=True)
        async for event in gateway.events():
            if isinstance(event, tether.SessionCreated):
                for n in range(1, 4):  # kept for the session's resume if its client is away
                    gateway.publish(event.session, "message", text=f"event {n}")


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8765))
    except KeyboardInterrupt:
        pass  # Ctrl-C: the gateway closed gracefully on the way out
