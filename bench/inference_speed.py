"""Inference speed: first-token latency and tokens/s of the inference engine
(worker.inference.engine, what `ftsvc inference` runs) against plain `model.generate` on
the same loaded model in the same run, for 1 stream and for 8 concurrent streams, with
the base model and with a fine-tuned one (a random LoRA r=16 adapter on all linear
layers), on a Llama-3-8B-shaped model with random weights loaded in 4-bit NF4, as a
QLoRA adapter is trained against it. Greedy decoding, the same prompts (of about
`--prompt-words` words) and `--max-tokens` for both.

Plain generate serves one request at a time (a server without a batcher), so 8
concurrent streams wait for each other there; the engine generates them as one batch.

    python bench/inference_speed.py --out /tmp/ib            # 8B shape on the GPU
    python bench/inference_speed.py --out /tmp/ib --small    # the tiny shape, on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STREAMS = 8
WORDS = "the quick brown fox jumps over a lazy dog while the capital of france is paris".split()


def prompts(n: int, words: int) -> list[str]:
    return [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(words)) for i in range(n)]


def summary(ttfts: list[float], tokens: int, seconds: float) -> dict[str, float]:
    return {
        "ttft_ms_median": round(1000 * median(ttfts), 1),
        "ttft_ms_max": round(1000 * max(ttfts), 1),
        "tokens_per_s": round(tokens / seconds, 1),
        "tokens": tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="working directory (the base model is kept there)")
    parser.add_argument("--small", action="store_true", help="the tiny shape: a dry run on a CPU")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-words", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FTSVC_DATA_DIR", str(args.out / "var"))  # the adapter's storage and cache

    import torch
    from transformers.generation.streamers import BaseStreamer

    from bench.merge_time import random_lora
    from bench.train_throughput import build_model
    from core.inference import AdapterTarget, BaseTarget, GenerateEvent, GenerateRequest, Target
    from core.specs import Quantization
    from core.storage import get_storage
    from worker.archives import archive
    from worker.inference.engine import Engine, adapter_name

    shape = "tiny" if args.small else "8b"
    started = time.monotonic()
    base_dir = build_model(shape, args.out)
    adapter_dir = random_lora(base_dir, args.out / f"lora-r16-{shape}")
    stored = archive(get_storage(), "bench/adapter.tar.gz", [adapter_dir])
    print(f"model and adapter ready in {time.monotonic() - started:.1f} s", flush=True)

    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    engine = Engine(device, cpu_threads=0).start()
    base = Target(base=BaseTarget(name=f"llama-{shape}", source=str(base_dir)), quantization=Quantization())
    tuned = base.model_copy(update={"adapter": AdapterTarget(name="ft:bench", key=stored.key)})
    started = time.monotonic()
    engine.load(tuned)  # the base in 4 bits, then the adapter on it
    print(f"loaded in {time.monotonic() - started:.1f} s on {engine.device_name}", flush=True)
    loaded = engine.bases[tuned.base_key]
    texts = prompts(STREAMS, args.prompt_words)

    def request(target: Target, text: str) -> GenerateRequest:
        return GenerateRequest(target=target, prompt=text, max_tokens=args.max_tokens, temperature=0)

    def ours(target: Target, n: int) -> dict[str, float]:
        """n requests at once through the engine, each read as a stream."""
        done = threading.Barrier(n + 1)
        results: list[tuple[float, int]] = []

        def one(text: str) -> None:
            finished = threading.Event()
            usage: list[int] = []

            def listen(event: GenerateEvent) -> None:
                if event.type in ("end", "error"):
                    usage.append(event.usage.completion_tokens if event.usage else 0)
                    finished.set()

            sent = time.monotonic()
            generation = engine.submit(request(target, text), listen)
            finished.wait()
            results.append(((generation.first_token_at or time.monotonic()) - sent, usage[0]))
            done.wait()

        began = time.monotonic()
        for text in texts[:n]:
            threading.Thread(target=one, args=(text,)).start()
        done.wait()
        return summary([r[0] for r in results], sum(r[1] for r in results), time.monotonic() - began)

    class FirstToken(BaseStreamer):
        def __init__(self) -> None:
            self.calls, self.at = 0, 0.0

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:  # (the first call hands over the prompt)
                self.at = time.monotonic()

        def end(self) -> None:
            pass

    def plain(target: Target, n: int) -> dict[str, float]:
        """n requests served one after the other by model.generate (all sent at once:
        each one's first token waits for those before it)."""
        model, tokenizer = loaded.model, loaded.prepared.tokenizer
        ttfts, tokens = [], 0
        with engine._model_lock:  # the engine's thread stays idle meanwhile
            if target.adapter is not None:
                model.set_adapter(adapter_name(target.adapter.key))
                adapters: Any = nullcontext()
            else:
                adapters = model.disable_adapter()
            began = time.monotonic()
            with adapters, torch.inference_mode():
                for text in texts[:n]:
                    ids, _ = engine.prepare(request(target, text))
                    inputs = torch.tensor([ids], device=engine.device)
                    streamer = FirstToken()
                    output = model.generate(
                        input_ids=inputs,
                        attention_mask=torch.ones_like(inputs),
                        max_new_tokens=args.max_tokens,
                        do_sample=False,
                        streamer=streamer,
                        eos_token_id=sorted(loaded.prepared.eos_ids),
                        pad_token_id=tokenizer.pad_token_id,
                    )
                    ttfts.append(streamer.at - began)
                    tokens += output.shape[1] - inputs.shape[1]
            return summary(ttfts, tokens, time.monotonic() - began)

    for target in (base, tuned):  # warm-up: kernels, caches
        engine.generate(request(target, texts[0]).model_copy(update={"max_tokens": 4}))
        plain(target, 1)
    rows: list[dict[str, Any]] = []
    for label, target in (("base", base), ("fine-tuned (LoRA r=16)", tuned)):
        for n in (1, STREAMS):
            for how, run in (("plain model.generate", plain), ("ours (engine)", ours)):
                figures = run(target, n)
                rows.append({"model": label, "streams": n, "how": how} | figures)
                print(json.dumps(rows[-1]), flush=True)
    engine.stop()

    facts = {"shape": shape, "device": engine.device_name, "max_tokens": args.max_tokens, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(facts, indent=2))
    print(f"\n{shape} on {engine.device_name}, 4-bit NF4, greedy, {args.max_tokens} new tokens a request\n")
    print("| model | streams | how | first token, median | first token, slowest | tokens/s (all streams) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['streams']} | {row['how']} | {row['ttft_ms_median']} ms "
            f"| {row['ttft_ms_max']} ms | {row['tokens_per_s']} |"
        )


if __name__ == "__main__":
    main()
