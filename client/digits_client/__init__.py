"""digits-client: the digits.v1 clients (sync and asyncio) and the `digits` command.

from digits_client import DigitsClient
with DigitsClient("localhost:8001") as client:
    print(client.classify(open("seven.png", "rb").read()).label)
"""
