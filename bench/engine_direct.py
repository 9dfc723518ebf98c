"""The limit (C): vLLM's AsyncLLM called in-process, no HTTP, same model and engine arguments.

Run as a script (`python -m bench.engine_direct CONFIG_JSON`): it starts the engine, then for
each concurrency runs the same shape of load as the HTTP benchmark (random prompts of
INPUT_LEN tokens, OUTPUT_LEN tokens each, ignore_eos) and prints one JSON object per
concurrency and round on stdout.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time
from typing import Any


async def one_request(
    engine: Any, prompt: list[int], output_len: int, request_id: str
) -> tuple[float, list[float], int]:
    from vllm import SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        max_tokens=output_len,
        min_tokens=output_len,
        ignore_eos=True,
        output_kind=RequestOutputKind.DELTA,
    )
    start = time.perf_counter()
    first: float | None = None
    last = start
    gaps: list[float] = []
    tokens = 0
    async for out in engine.generate(TokensPrompt(prompt_token_ids=prompt), params, request_id):
        now = time.perf_counter()
        if first is None:
            first = now - start
        else:
            gaps.append(now - last)
        last = now
        tokens += len(out.outputs[0].token_ids)
    return first or 0.0, gaps, tokens


async def run_load(
    engine: Any,
    vocab: int,
    concurrency: int,
    prompts: int,
    input_len: int,
    output_len: int,
    seed: int,
) -> dict[str, float]:
    rng = random.Random(seed)
    semaphore = asyncio.Semaphore(concurrency)
    results: list[tuple[float, list[float], int]] = []

    async def limited(i: int) -> None:
        prompt = [rng.randrange(10, vocab) for _ in range(input_len)]
        async with semaphore:
            results.append(await one_request(engine, prompt, output_len, f"c{seed}-{i}"))

    start = time.perf_counter()
    await asyncio.gather(*(limited(i) for i in range(prompts)))
    took = time.perf_counter() - start
    ttfts = sorted(r[0] for r in results)
    itls = sorted(g for r in results for g in r[1])
    tokens = sum(r[2] for r in results)
    return {
        "output_throughput": tokens / took,
        "request_throughput": prompts / took,
        "median_ttft_ms": statistics.median(ttfts) * 1000,
        "p99_ttft_ms": ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.99))] * 1000,
        "median_itl_ms": statistics.median(itls) * 1000 if itls else 0.0,
        "p99_itl_ms": itls[min(len(itls) - 1, int(len(itls) * 0.99))] * 1000 if itls else 0.0,
    }


async def main(config: dict[str, Any]) -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(
        model=config["model_dir"], **config["engine_args"], limit_mm_per_prompt={"image": 5}
    )
    engine = AsyncLLM.from_engine_args(args, usage_context=UsageContext.ENGINE_CONTEXT)
    vocab = engine.model_config.get_vocab_size()
    try:
        for concurrency in config["concurrencies"]:
            await run_load(engine, vocab, concurrency, concurrency, config["input_len"], 8, 0)
            for round_ in range(config["rounds"]):
                row = await run_load(
                    engine,
                    vocab,
                    concurrency,
                    config["prompts"][str(concurrency)],
                    config["input_len"],
                    config["output_len"],
                    round_ + 1,
                )
                print(json.dumps({"concurrency": concurrency, "round": round_, **row}), flush=True)
    finally:
        engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
