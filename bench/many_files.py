"""Many small files against one file of the same text (issue 25): streaming, `prepare`, and the cursor's size.

Writes N files of ~1 kB of Chinese poems and prose (tests/zh_text.py) in nested folders and one file holding the
same text, then prints for each: the seconds to resolve the directory and stream every window (char tokenizer,
in-process TextStream), the seconds `gpt2dist prepare` takes (1 worker), the JSON size of the stream's cursor
half-way through, and the ratio many/one. `--datasets N` also times `datasets.load_dataset` (gpt2dist's reader
before issue 25, offline) on N of the files and extrapolates it to all of them.

    python bench/many_files.py                      # 5,000 files of 1 kB vs one 5 MB file
    python bench/many_files.py --files 1000 --datasets 100
    python bench/many_files.py --files 500 --cursor-only   # streaming and the cursor, no prepare
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from zh_text import TEXTS  # noqa: E402

from gpt2dist.config import load_config  # noqa: E402
from gpt2dist.data.pieces import DocumentEncoder  # noqa: E402
from gpt2dist.data.prepare import prepare  # noqa: E402
from gpt2dist.data.stream import TextStream  # noqa: E402
from gpt2dist.data.text import resolve_files  # noqa: E402
from gpt2dist.tokenizer import train_char  # noqa: E402


def one_kb(i: int) -> str:
    """~1 kB (UTF-8) of paragraphs, starting at a different text for each file."""
    out, k = [], i
    while len("\n\n".join(out).encode("utf-8")) < 1000:
        out.append(TEXTS[k % len(TEXTS)])
        k += 1
    return "\n\n".join(out) + "\n"


def stream_all(pattern: str, encode, block: int) -> tuple[float, int, int]:
    """Seconds to resolve + stream every window, the windows, and the cursor's JSON bytes half-way."""
    started = time.perf_counter()
    files = resolve_files([pattern], "data.train")
    cfg = load_config(None, ["data.train=[x]", f"data.block_size={block}"]).data
    stream = TextStream(files, cfg, encode, repeat=False)
    windows, cursor = 0, 0
    for _ in stream:
        windows += 1
    elapsed = time.perf_counter() - started
    half = TextStream(files, cfg, encode, repeat=False)
    for _ in range(windows // 2):
        next(half)
    cursor = len(json.dumps(half.state_dict()))
    return elapsed, windows, cursor


def prepare_time(tmp: Path, pattern: str, name: str, block: int) -> float:
    cfg = load_config(None, [f"run_dir={tmp / name}", f"data.train=[{pattern}]", f"data.block_size={block}",
                             "tokenizer.kind=char", f"data.packed_dir={tmp / name / 'packed'}"])
    started = time.perf_counter()
    prepare(cfg, workers=1, progress=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--datasets", type=int, default=0, help="also time datasets.load_dataset on N files")
    parser.add_argument("--cursor-only", action="store_true", help="skip prepare (stream and cursor only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        texts = [one_kb(i) for i in range(args.files)]
        for i, text in enumerate(texts):
            path = tmp / "many" / f"d{i % 50:02d}" / f"{i:06d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        (tmp / "one").mkdir()
        (tmp / "one" / "all.txt").write_text("\n".join(texts), encoding="utf-8")  # texts end with "\n": + "\n" = \n\n
        size = (tmp / "one" / "all.txt").stat().st_size
        encode = DocumentEncoder(train_char(TEXTS))
        print(f"{args.files:,} files of ~{size / args.files:,.0f} B vs one file of {size / 1e6:.1f} MB")
        many = stream_all(str(tmp / "many"), encode, args.block_size)
        one = stream_all(str(tmp / "one" / "all.txt"), encode, args.block_size)
        print(f"stream:  many {many[0]:.2f} s ({many[1]:,} windows) | one {one[0]:.2f} s ({one[1]:,} windows) | "
              f"ratio {many[0] / one[0]:.2f}")
        print(f"cursor half-way: many {many[2]:,} B | one {one[2]:,} B | ratio {many[2] / one[2]:.2f}")
        if args.cursor_only:
            return
        p_many = prepare_time(tmp, str(tmp / "many"), "pm", args.block_size)
        p_one = prepare_time(tmp, str(tmp / "one" / "all.txt"), "po", args.block_size)
        print(f"prepare: many {p_many:.2f} s | one {p_one:.2f} s | ratio {p_many / p_one:.2f}")
        if args.datasets:
            import datasets

            datasets.disable_progress_bars()
            paths = sorted((tmp / "many").rglob("*.txt"))[:args.datasets]
            started = time.perf_counter()
            for path in paths:
                ds = datasets.load_dataset("text", data_files=[str(path)], split="train", streaming=True,
                                           sample_by="paragraph", keep_linebreaks=True)
                sum(1 for _ in ds)
            per = (time.perf_counter() - started) / len(paths)
            print(f"datasets.load_dataset (before issue 25): {per * 1e3:.1f} ms per file -> "
                  f"~{per * args.files:.0f} s to open {args.files:,} files")


if __name__ == "__main__":
    main()
