"""Many questions at once, async, with bounded concurrency.

Offline by default; set DIFY_API_KEY / DIFY_BASE_URL for a real app.
    python examples/async_batch.py
"""

import asyncio
import time

from dify_lc import ChatDify
from dify_lc.testing import endpoint_or_fake


async def main(base_url: str, api_key: str) -> None:
    model = ChatDify(base_url=base_url, api_key=api_key, response_mode="blocking")
    questions = [f"question {i}" for i in range(100)]
    start = time.perf_counter()
    # max_concurrency bounds the calls in flight; users keep their own conversations.
    answers = await model.abatch(
        questions,
        config=[{"configurable": {"user": f"user-{i}"}} for i in range(len(questions))],
        max_concurrency=16,
    )
    print(f"{len(answers)} answers in {time.perf_counter() - start:.2f} s")
    await model.aclose()


with endpoint_or_fake("dify") as dify:
    asyncio.run(main(dify.base_url, dify.api_key))
