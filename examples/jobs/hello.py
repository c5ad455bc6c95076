# The demo job: plain Python, top-level await and concurrency, run in a
# WebAssembly sandbox by an eryx worker.
import asyncio
import platform
import sys


async def fetch(i):
    await asyncio.sleep(0.1)  # stands in for I/O; all five wait together
    return i * i

print(f"hello from {platform.python_implementation()} {platform.python_version()} on {sys.platform}")
squares = await asyncio.gather(*(fetch(i) for i in range(5)))
print("squares:", squares)
result = {"squares": squares, "sum": sum(squares)}
