"""A procedural children's-story corpus, so the demo needs no download and shows learning within minutes.

The demo trains a tiny character-level GPT-2 on a CPU for about two minutes and then samples from it. For
the samples to be convincing, the text must have strong, easily learnable structure: a small vocabulary (a
few hundred words, so spelling is learnt quickly), recurring sentence templates and story arcs (so the model
visibly picks up "Once upon a time, ..." and "The end."), and yet enough variety per slot that there are
many distinct stories and the model cannot simply memorise a handful.

Everything is generated from a seed with private :class:`random.Random` instances (never the global random
state), so the same seed always gives byte-identical files on every machine. Stories are plain ASCII and are
separated by one blank line, which is how the data loader splits documents; a story itself never contains a
blank line.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from gpt2dist import atomic

__all__ = ["generate_stories", "main", "write_demo_corpus"]

TRAIN_FILE = "train.txt"
VAL_FILE = "val.txt"

# The validation stream is seeded with a string: a str seed is hashed (SHA-512) into a huge integer, so it
# can never coincide with the small integer seed of any train stream (seed 1's train is not seed 0's val).
_VAL_SEED_PREFIX = "gpt2dist.demo_corpus/val/"

# ---------------------------------------------------------------------------------------------------------
# Vocabulary: deliberately small, so a character-level model learns to spell every word quickly.
# ---------------------------------------------------------------------------------------------------------


def _phrases(text: str) -> tuple[str, ...]:
    """Split a ``;``-separated list, so long vocabulary lists stay compact and readable in the source."""
    return tuple(p.strip() for p in text.split(";"))


_GIRLS = _phrases(
    "Lily; Mia; Sara; Emma; Zoe; Anna; Lucy; Ruby; Ella; Rosa; Nina; Maya; Kate; Amy; Ivy; Daisy"
)
_BOYS = _phrases("Tom; Ben; Max; Sam; Leo; Jack; Tim; Finn; Oscar; Bob; Jake; Noah; Eli; Hugo; Ray; Pip")
_ANIMALS = _phrases(
    "cat; dog; bunny; bear; fox; duck; mouse; frog; pig; owl; lamb; puppy; kitten; bird; turtle; squirrel;"
    "horse; goat; hen; hedgehog"
)
_TRAITS = _phrases(
    "happy; tiny; brave; kind; shy; curious; silly; sleepy; fluffy; clever; gentle; cheerful; small; funny;"
    "quiet; friendly"
)
_SETTING_ADJS = _phrases("small; green; quiet; sunny; big; pretty; busy; sleepy")
_PLACES = _phrases(
    "park; garden; forest; meadow; farm; yard; field; town; village; valley; playground; orchard"
)
_ACTIVITIES = _phrases(
    "play; run; jump; dance; sing; swim; read books; draw pictures; climb trees; pick flowers; play ball;"
    "hop and skip; look at the clouds; chase butterflies; splash in puddles; build sand castles;"
    "play hide and seek; fly kites; count the stars; roll in the grass"
)
_COLORS = _phrases("red; blue; green; yellow; pink; purple; orange; white")
_OBJECTS = _phrases(
    "ball; kite; hat; toy car; teddy bear; doll; book; scarf; drum; boat; balloon; blanket; shoe; cup; bucket"
)
_SPOTS = _phrases(
    "under the bed; behind a tree; under a big rock; near the pond; in the tall grass; under the bench;"
    "by the old fence; inside a box; behind the barn; under a bush; next to the well; on top of the hill"
)
_FOODS = _phrases("apple; cake; cookie; carrot; pie; sandwich; banana; muffin; pear; orange; plum; melon")
_SAD = _phrases("sad; upset; worried")
_GLAD = _phrases("happy; glad; proud; excited")
_GOALS = _phrases(
    "climb the tall tree; jump over the big log; ride a bike; swim across the pond; fly a kite;"
    "reach the top of the hill; build a tall tower; catch the ball; whistle a song; tie a bow; hop on one foot"
)
_GIFTS = _phrases(
    "a crown of flowers; a card with a big heart; a necklace of shells; a little clay pot;"
    "a picture of the two of them; a basket of berries"
)


class _Character:
    """One character of a story: name, animal and the pronouns the templates need."""

    __slots__ = ("animal", "he", "him", "his", "name", "trait")

    def __init__(self, rng: random.Random, *, avoid: str = "") -> None:
        girl = rng.random() < 0.5
        names = _GIRLS if girl else _BOYS
        name = rng.choice(names)
        while name == avoid:
            name = rng.choice(names)
        self.name = name
        self.animal = rng.choice(_ANIMALS)
        self.trait = rng.choice(_TRAITS)
        self.he, self.him, self.his = ("she", "her", "her") if girl else ("he", "him", "his")


def _a(word: str) -> str:
    """'a' or 'an' before ``word`` (the vocabulary has no words where the first letter misleads)."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _cap(s: str) -> str:
    """Upper-case the first letter, for pronouns that start a sentence."""
    return s[:1].upper() + s[1:]


# ---------------------------------------------------------------------------------------------------------
# Story parts. Each returns a list of sentences; the sentences of one part are joined by spaces and the
# parts of one story by single newlines (never a blank line: that would split the story in two documents).
# ---------------------------------------------------------------------------------------------------------


def _intro(rng: random.Random, hero: _Character, place: str) -> list[str]:
    """Who the hero is and what they love to do: a few fixed openings, so they are learnt first."""
    n, act = hero.name, rng.choice(_ACTIVITIES)
    k = rng.randrange(4)
    if k == 0:
        first = f"Once upon a time, there was {_a(hero.trait)} little {hero.animal} named {n}."
    elif k == 1:
        first = (
            f"Once upon a time, in {_a(rng.choice(_SETTING_ADJS))} {place}, "
            f"there lived {_a(hero.trait)} {hero.animal} named {n}."
        )
    elif k == 2:
        first = f"There once was {_a(hero.trait)} little {hero.animal} called {n}."
    else:
        first = f"Once upon a time, there was {_a(hero.trait)} {hero.animal}. {_cap(hero.his)} name was {n}."
    # A hero who already "lived in a <place>" does not also "live near the <place>".
    k = rng.randrange(3 if k == 1 else 4)
    if k == 0:
        second = f"{n} loved to {act} in the {place}."
    elif k == 1:
        second = f"Every day, {n} liked to {act} in the {place}."
    elif k == 2:
        second = f"More than anything, {n} loved to {act}."
    else:
        second = f"{n} lived near the {place}, and {hero.he} loved to {act}."
    return [first, second]


def _arc_lost(rng: random.Random, hero: _Character, friend: _Character, place: str) -> tuple[list[str], str]:
    """The hero loses a toy and a friend helps find it."""
    n, f, he = hero.name, friend.name, hero.he
    obj = rng.choice(_OBJECTS)
    spot1, spot2 = rng.sample(_SPOTS, 2)
    return [
        f"One day, {n} lost {hero.his} {rng.choice(_COLORS)} {obj}.",
        f"{_cap(he)} looked {spot1}, but it was not there, and {he} felt {rng.choice(_SAD)}.",
        f"Then {f} the {friend.animal} came to help, and soon {f} found the {obj} {spot2}.",
        f'"Thank you!" said {n}.',
    ], rng.choice(("friends help each other", "it is good to ask for help"))


def _arc_new_friend(
    rng: random.Random, hero: _Character, friend: _Character, place: str
) -> tuple[list[str], str]:
    """The hero meets someone lonely and invites them to play."""
    n, f = hero.name, friend.name
    act = rng.choice(_ACTIVITIES)
    return [
        f"One day, {n} saw {_a(friend.trait)} {friend.animal} named {f} sitting all alone.",
        f'{n} said, "Hi, {f}! Do you want to {act} with me?"',
        f'{f} smiled and said, "Yes, please!"',
        "So they played together all day.",
    ], rng.choice(("it is good to be kind to others", "a new friend can be found anywhere"))


def _arc_share(rng: random.Random, hero: _Character, friend: _Character, place: str) -> tuple[list[str], str]:
    """The hero finds some food and shares it with a hungry friend."""
    n, f, he = hero.name, friend.name, hero.he
    food = rng.choice(_FOODS)
    return [
        f"One day, {n} found a big {food} {rng.choice(_SPOTS)}.",
        f"Then {he} saw {f} the {friend.animal}, who looked hungry.",
        f"So {n} broke the {food} in two and gave half to {f}.",
        f'"Thank you," said {f}. "You are so kind!"',
    ], rng.choice(("sharing makes everyone happy", "it feels good to share"))


def _arc_storm(rng: random.Random, hero: _Character, friend: _Character, place: str) -> tuple[list[str], str]:
    """A storm scares the hero, who waits it out together with a friend."""
    n, f, he = hero.name, friend.name, hero.he
    return [
        f"One day, it began to rain very hard in the {place}.",
        f"{n} ran to hide {rng.choice(_SPOTS)}, and there {he} found {f} the {friend.animal}.",
        f'"Let us stay together," said {n}.',
        "They sang a song until the sun came out and a rainbow filled the sky.",
    ], rng.choice(("things are less scary with a friend", "every storm ends"))


def _arc_try(rng: random.Random, hero: _Character, friend: _Character, place: str) -> tuple[list[str], str]:
    """The hero fails at something hard, is encouraged by a friend and succeeds."""
    n, f, he = hero.name, friend.name, hero.he
    return [
        f"One day, {n} wanted to {rng.choice(_GOALS)}, but it was too hard.",
        f'"You can do it!" said {f} the {friend.animal}.',
        f"So {n} tried one more time, and this time {he} did it!",
        f"{n} was so {rng.choice(_GLAD)}.",
    ], rng.choice(("you should never give up", "practice makes things easy"))


def _arc_gift(rng: random.Random, hero: _Character, friend: _Character, place: str) -> tuple[list[str], str]:
    """The hero makes a birthday gift for a friend."""
    n, f, he = hero.name, friend.name, hero.he
    return [
        f"One day, it was {f}'s birthday, so {n} made {rng.choice(_GIFTS)} all by {hero.him}self.",
        f"When {he} gave the gift to {f}, the little {friend.animal} smiled very big.",
        f'"This is the best gift ever!" said {f}.',
    ], rng.choice(("the best gifts come from the heart", "giving is as fun as getting"))


_ARCS = (_arc_lost, _arc_new_friend, _arc_share, _arc_storm, _arc_try, _arc_gift)


def _ending(rng: random.Random, hero: _Character, friend: _Character, lesson: str) -> list[str]:
    """An optional moral and closing line, always finished by "The end." so the model learns to stop."""
    out = []
    if rng.random() < 0.4:
        out.append(f"{hero.name} learned that {lesson}.")
    k = rng.randrange(4)
    if k == 0:
        out.append(f"From that day on, {hero.name} and {friend.name} were best friends.")
    elif k == 1:
        out.append("And they lived happily ever after.")
    elif k == 2:
        out.append(f"That night, {hero.name} went to bed with a big smile.")
    out.append("The end.")
    return out


def _story(rng: random.Random) -> str:
    """One story: intro, one plot arc, ending; single newlines between the three parts."""
    hero = _Character(rng)
    friend = _Character(rng, avoid=hero.name)
    place = rng.choice(_PLACES)
    plot, lesson = rng.choice(_ARCS)(rng, hero, friend, place)
    parts = (_intro(rng, hero, place), plot, _ending(rng, hero, friend, lesson))
    return "\n".join(" ".join(p) for p in parts)


def _generate(n: int, rng: random.Random) -> list[str]:
    """``n`` stories drawn from ``rng``; shared by train (int seed) and val (str seed) streams."""
    if n < 0:
        raise ValueError(f"number of stories must be >= 0, got {n}")
    return [_story(rng) for _ in range(n)]


def generate_stories(n: int, seed: int = 0) -> list[str]:
    """Return ``n`` short ASCII stories, deterministic in ``seed``, so every run of the demo sees the same data.

    Uses its own ``random.Random(seed)``, never the global random state, so callers' randomness is untouched.
    ``train.txt`` written by :func:`write_demo_corpus` with the same seed holds exactly these stories.
    """
    return _generate(n, random.Random(seed))


def _join(stories: list[str]) -> str:
    """Stories separated by one blank line (the loader's document separator), with a final newline."""
    return "\n\n".join(stories) + "\n" if stories else ""


def write_demo_corpus(
    out_dir: str | os.PathLike, *, train_stories: int = 20000, val_stories: int = 1000, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``out_dir/train.txt`` and ``out_dir/val.txt`` and return their paths, so the demo has its data.

    train.txt holds ``generate_stories(train_stories, seed)``; val.txt comes from a separate RNG stream
    (seeded by a string derived from ``seed``), so it never replays the train sequence for any seed. Each
    file is written to a temporary name in the same directory and then ``os.replace()``d into place, so a
    killed write never leaves a half file. Existing files are always regenerated: it takes about a second.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = _generate(train_stories, random.Random(seed))
    val = _generate(val_stories, random.Random(f"{_VAL_SEED_PREFIX}{seed}"))
    train_path, val_path = out / TRAIN_FILE, out / VAL_FILE
    atomic.write_text(train_path, _join(train))
    atomic.write_text(val_path, _join(val))
    return train_path, val_path


def _count(text: str) -> int:
    """argparse type for a story count: a non-negative int, so a typo fails with a one-line usage error."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m gpt2dist.demo_corpus OUT_DIR``; prints each written path and its size."""
    parser = argparse.ArgumentParser(
        prog="python -m gpt2dist.demo_corpus",
        description="Write a procedural children's-story corpus (train.txt, val.txt) for the demo.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write train.txt and val.txt into")
    parser.add_argument(
        "--train-stories",
        type=_count,
        default=20000,
        metavar="N",
        help="stories in train.txt (default: %(default)s)",
    )
    parser.add_argument(
        "--val-stories",
        type=_count,
        default=1000,
        metavar="N",
        help="stories in val.txt (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in write_demo_corpus(
        args.out_dir, train_stories=args.train_stories, val_stories=args.val_stories, seed=args.seed
    ):
        print(f"{path} {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
