"""Issue 22 item 3: typed state reads and writes the files older code wrote, byte for byte.

The samples in fixtures/state-62b57c6/ were written by gpt2dist at commit 62b57c6, before these types existed
(fixtures/make_state_samples.py): a train_state.json with the optional keys, and a rank's cursor holding pieces of a
long document dealt over two ranks, with the windows that old stream gave next.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

from gpt2dist import atomic
from gpt2dist.config import DataConfig
from gpt2dist.data.sharding import BufferedUnit
from gpt2dist.data.stream import TextStream
from gpt2dist.run.state import TrainState

SAMPLES = Path(__file__).parent / "fixtures" / "state-62b57c6"
FIXTURES = Path(__file__).parent / "fixtures"
OLD_STATES = [f"{name}/{engine}/checkpoints/step-00000004/train_state.json"  # in test_compat's tarballs
              for name in ("v1-run", "v2-run") for engine in ("torch", "ds")]


def old_train_states(tmp_path: Path) -> list[Path]:
    """train_state.json of the run dirs written by 5d985cb and fb34bc0 (test_compat's fixtures)."""
    for name in ("v1-run", "v2-run"):
        with tarfile.open(FIXTURES / f"{name}.tar.gz") as tar:
            tar.extractall(tmp_path / "old", members=[tar.getmember(m) for m in OLD_STATES if m.startswith(name)],
                           filter="data")
    return [tmp_path / "old" / m for m in OLD_STATES]


def test_train_state_json_round_trips_byte_for_byte(tmp_path):
    for sample in (SAMPLES / "train_state.json", *old_train_states(tmp_path)):
        state = TrainState.from_json(json.loads(sample.read_bytes()))
        written = atomic.write_json(tmp_path / "train_state.json", state.to_json())  # what CheckpointManager writes
        assert written.read_bytes() == sample.read_bytes(), sample
    budgeted = TrainState.read(SAMPLES)
    assert (budgeted.step, budgeted.tokens, budgeted.world_size, budgeted.budget["max_steps"]) == (2, 256, 1, 2)
    assert budgeted.data_files[0][0].endswith("train.txt")


def test_an_old_train_state_without_optional_keys_reads_with_defaults():
    assert TrainState.from_json({"step": 4, "tokens": 512}) == TrainState(4, 512, epoch=0, world_size=1)


class Chars:  # the generator's tokenizer: ord(c) % 250 + 1, EOS 0, pieces of 500 characters
    piece_chars = 500

    def __call__(self, docs: list[str]) -> list[list[int]]:
        return [[ord(c) % 250 + 1 for c in doc] + [0] for doc in docs]


def test_an_old_cursor_with_buffered_pieces_resumes_as_the_old_stream_went_on(tmp_path, monkeypatch):
    shutil.copy(SAMPLES / "long.txt", tmp_path / "long.txt")
    monkeypatch.chdir(tmp_path)  # the sample names its file relative
    saved = json.loads((SAMPLES / "cursor-rank00000.json").read_text())
    units = [BufferedUnit.from_json(entry) for entry in saved["partial"]]
    assert units and all(u.deal for u in units) and [u.to_json() for u in units] == saved["partial"]
    stream = TextStream([Path("long.txt")], DataConfig(block_size=31, sample_by="document"), Chars(), rank=0,
                        world_size=2)
    stream.load_state_dict(saved)
    # the writer gives back what the reader took, before any read, in today's layout (version 4: no row counts,
    # a history of world-size changes)
    assert stream.state_dict() == {k: v for k, v in saved.items() if k != "rows"} | {"version": 4, "history": []}
    assert [next(stream).tokens for _ in range(3)] == json.loads((SAMPLES / "next-windows.json").read_text())
