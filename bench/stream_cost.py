"""What the streaming path costs per window as documents grow: one document of N characters, read in-process.

For each length it prints the time to the first window (open, read, tokenize what the first window needs),
windows/s and tokens/s over the whole document (cuts, tokenizing, cursor-free), and the size of the JSON cursor
after 50 windows. A byte-level BPE (4096) trained on the bundled stories tokenizes; the document
is those stories joined into one text (data.sample_by=document). Run it from another checkout to compare code
versions: it uses only TextStream, state_dict and the tokenizer.

    python bench/stream_cost.py                      # 100k, 1M, 4M characters
    python bench/stream_cost.py --chars 1e5 1e6 --block-size 1024
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=float, nargs="+", default=[1e5, 1e6, 4e6])
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0, help="stop reading a document after this long")
    args = parser.parse_args(argv)

    from gpt2dist.config import DataConfig
    from gpt2dist.data.stream import TextStream
    from gpt2dist.demo_corpus import generate_stories
    from gpt2dist.tokenizer import encode_documents, train_bpe

    try:  # this version's encoder (exact pieces); older versions take a plain function
        from gpt2dist.data.pieces import DocumentEncoder
    except ImportError:
        DocumentEncoder = None  # noqa: N806
    stories = generate_stories(int(max(args.chars)) // 300 + 10, seed=5)
    tokenizer = train_bpe(stories[:3000], 4096)
    encode = DocumentEncoder(tokenizer) if DocumentEncoder else (lambda docs: encode_documents(tokenizer, docs))
    text = "\n".join(stories)
    print(f"block_size {args.block_size}, BPE 4096, one document per run, in-process TextStream "
          f"({'pieces' if DocumentEncoder else 'whole documents'})")
    print(f"{'chars':>10} {'first window s':>15} {'windows/s':>10} {'tokens/s':>11} {'cursor bytes':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm.txt"  # the first `datasets` open in a process costs seconds: not the stream's
        warm.write_text(text[:100_000], encoding="utf-8")
        next(TextStream([warm], DataConfig(block_size=args.block_size, sample_by="document"), encode))
        for chars in args.chars:
            path = Path(tmp) / f"doc{int(chars)}.txt"
            path.write_text(text[:int(chars)], encoding="utf-8")
            cfg = DataConfig(block_size=args.block_size, sample_by="document")
            stream = TextStream([path], cfg, encode, repeat=False)
            started = time.perf_counter()
            next(stream)
            first = time.perf_counter() - started
            windows, cursor = 1, 0
            started = time.perf_counter()
            for _ in stream:
                windows += 1
                if windows == 50:
                    cursor = len(json.dumps(stream.state_dict()))
                if time.perf_counter() - started > args.seconds:
                    break
            rate = (windows - 1) / (time.perf_counter() - started)
            print(f"{int(chars):>10,} {first:>15.3f} {rate:>10,.0f} {rate * (args.block_size + 1):>11,.0f} "
                  f"{cursor:>13,}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
