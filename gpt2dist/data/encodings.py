"""When a text file does not decode: where (file, byte offset) and which encoding it probably is, in one line.

Chinese text from Windows tools is often GBK (GB18030 is its superset), from Taiwan and Hong Kong Big5, and
Notepad's "Unicode" is UTF-16 with a BOM. GBK and Big5 byte ranges overlap, so both may decode a file without
error: the guess is the candidate whose decoded text has the most of the commonest Chinese characters (the
wrong one gives rare or unassigned characters). A guess only words the error; nothing is read with it.
"""

from __future__ import annotations

import codecs
import gzip
from pathlib import Path

from gpt2dist.errors import UserError

CANDIDATES = ("utf-8", "gb18030", "big5", "utf-16")
SAMPLE_BYTES = 1 << 16
# The commonest Chinese characters, simplified and traditional forms both (frequency lists' top few hundred).
COMMON = set(
    "的一是不了人我在有他这這中大来來上国國个個到说說们們为為子和你地出道也时時年得就那要下以生会會自着著去之过過"
    "家学學对對可她里裡后後小么麼心多天而能好都然没沒日于於起还還发發成事只作当當想看文无無开開手十用主行方又如前所"
    "本见見经經头頭面公同三已老从從动動两兩长長知民样樣现現分将將外但身些与與高意进進把法此实實回二理美点點月明其种"
    "種声聲全工己话話儿兒者向情部正名定女问問力机機给給等几幾很业業最间間新什打便位因重被走电電四第门門相次东東"
    "山水风風花春秋夜人云雲雨江河白日月光床前明疑是地上霜举舉头望低思故乡鄉")


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def bad_offset(path: Path, encoding: str) -> int | None:
    """Byte offset of the first sequence that does not decode with `encoding` (None: the file decodes)."""
    with _open(path) as fh:
        return bad_offset_in(fh, encoding)


def bad_offset_in(fh, encoding: str) -> int | None:
    """The same for an open binary stream (a local file, or a remote one through fsspec), read in 1 MiB blocks."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    while chunk := fh.read(1 << 20):
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            return offset + exc.start - len(decoder.getstate()[0])
        offset += len(chunk)
    try:
        decoder.decode(b"", final=True)  # a sequence cut off by the end of the file
    except UnicodeDecodeError as exc:
        return offset + exc.start - len(decoder.getstate()[0])
    return None


def guess_encoding(sample: bytes) -> str | None:
    """The likely encoding of a sample of text bytes among CANDIDATES, or None when none decodes it."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    best, best_score = None, -1.0
    for name in CANDIDATES[:-1]:
        try:
            text = codecs.getincrementaldecoder(name)().decode(sample)  # not final: the sample may cut a sequence
        except UnicodeDecodeError:
            continue
        wide = [c for c in text if ord(c) > 0x7F]
        score = sum(c in COMMON for c in wide) / len(wide) if wide else 1.0
        if score > best_score:
            best, best_score = name, score
    return best


def decode_error(path: Path, encoding: str) -> UserError:
    """The one-line error for a file that does not decode with data.encoding: where, the likely encoding, the fix."""
    offset = bad_offset(path, encoding)
    where = f"{path} at byte {offset}" if offset is not None else str(path)
    with _open(path) as fh:
        sample = fh.read(SAMPLE_BYTES)
    guess = guess_encoding(sample)
    label = {"gb18030": "GBK/GB18030", "big5": "Big5", "utf-16": "UTF-16", "utf-8": "UTF-8"}
    if guess is not None and codecs.lookup(guess).name != codecs.lookup(encoding).name:
        return UserError(f"{where} is not valid {encoding.upper()}: it looks like {label[guess]}; set "
                         f"data.encoding={guess} (or data.encoding_errors=replace to replace the bad bytes)")
    return UserError(f"{where} is not valid {encoding.upper()}: fix the file, set data.encoding to its encoding "
                     "(utf-8, utf-8-sig, gb18030, big5, utf-16) or data.encoding_errors=replace")
