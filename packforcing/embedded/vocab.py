"""The embedded world's prompt vocabulary, prompt parsing, tokenizer and text encoder.

Vocabulary (every other word is ignored; the UI lists the words that were understood):

    colours      red, green, blue, yellow, white
    shapes       circle, square, triangle       (also: circles, squares, triangles,
                                                 ball(s) -> circle, box(es) -> square)
    pan          left, right                    (camera direction; default right)
    speed        slow, medium, fast             (pan speed; default medium;
                                                 also: slowly, quick, quickly)
    motion       still, bouncing                (objects' own motion; default still;
                                                 also: static, bounce, bounces, bouncy)
    background   night, dusk, forest            (default night)

Rules:
- A colour belongs to the next shape word: "red circle and blue square" is two
  objects; "red and blue circles" is a red circle and a blue circle. A colour with no
  shape after it is a circle; a shape with no colour before it is white.
- Objects are kept in prompt order, duplicates dropped, at most MAX_OBJECTS.
- For pan, speed, motion and background the last word given wins.
- A prompt must name at least one object: `validate_prompt` raises ValueError (listing
  the known words) for an empty or all-unknown prompt, or one naming more than
  MAX_OBJECTS objects.
- The seed (not the prompt) chooses the layout: where the objects and landmarks are.

`tokenize` parses first and encodes the *meaning*, not the wording: every prompt maps
to the canonical sequence [colour shape]*n, pan, speed, motion, background, so synonyms,
filler words, word order and omitted defaults do not change what the model sees.
"""

from __future__ import annotations

import re

import torch
from torch import nn

COLOURS = ("red", "green", "blue", "yellow", "white")
SHAPES = ("circle", "square", "triangle")
PANS = ("left", "right")
SPEEDS = ("slow", "medium", "fast")
MOTIONS = ("still", "bouncing")
BACKGROUNDS = ("night", "dusk", "forest")

DEFAULTS = {"pan": "right", "speed": "medium", "motion": "still", "background": "night"}
DEFAULT_SHAPE = "circle"  # for a colour with no shape after it
DEFAULT_COLOUR = "white"  # for a shape with no colour before it
MAX_OBJECTS = 4
MAX_TOKENS = 16

SYNONYMS = {
    "circles": "circle", "ball": "circle", "balls": "circle",
    "squares": "square", "box": "square", "boxes": "square",
    "triangles": "triangle",
    "slowly": "slow", "quick": "fast", "quickly": "fast",
    "static": "still", "bounce": "bouncing", "bounces": "bouncing", "bouncy": "bouncing",
}

_FIELD_OF = {**{w: "pan" for w in PANS}, **{w: "speed" for w in SPEEDS}, **{w: "motion" for w in MOTIONS},
             **{w: "background" for w in BACKGROUNDS}}

# Token ids: 0 = padding, then every canonical word once.
VOCAB = COLOURS + SHAPES + PANS + SPEEDS + MOTIONS + BACKGROUNDS
TOKEN_ID = {w: i + 1 for i, w in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB) + 1


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", (text or "").lower())


def canonical(word: str) -> str | None:
    """A word's canonical vocabulary form, or None if it is not understood."""
    word = SYNONYMS.get(word, word)
    return word if word in TOKEN_ID else None


def known_words() -> str:
    return ("colours: " + ", ".join(COLOURS) + "; shapes: " + ", ".join(SHAPES) + "; pan: " + ", ".join(PANS)
            + "; speed: " + ", ".join(SPEEDS) + "; motion: " + ", ".join(MOTIONS)
            + "; background: " + ", ".join(BACKGROUNDS))


def _parse(text: str):
    objects: list[tuple[str, str]] = []
    fields = dict(DEFAULTS)
    understood: list[str] = []
    pending: list[str] = []

    def add(pair):
        if pair not in objects:
            objects.append(pair)

    for raw in _words(text):
        word = canonical(raw)
        if word is None:
            continue
        understood.append(raw)
        if word in COLOURS:
            pending.append(word)
        elif word in SHAPES:
            for colour in pending or [DEFAULT_COLOUR]:
                add((colour, word))
            pending = []
        else:
            fields[_FIELD_OF[word]] = word
    for colour in pending:
        add((colour, DEFAULT_SHAPE))
    return objects, fields, understood


def parse_prompt(text: str) -> tuple[dict, list[str]]:
    """text -> (WorldSpec fields except seed, understood words as typed).

    Fields: objects (tuple of (colour, shape), at most MAX_OBJECTS, possibly empty),
    pan, speed, motion, background (defaults filled in)."""
    objects, fields, understood = _parse(text)
    return {"objects": tuple(objects[:MAX_OBJECTS]), **fields}, understood


def describe_prompt(text: str) -> list[str]:
    """The words of `text` the world understood, in order (what the UI highlights)."""
    return _parse(text)[2]


def validate_prompt(text: str) -> None:
    """Raise ValueError (naming the known words) unless `text` names 1..MAX_OBJECTS objects."""
    objects, _, understood = _parse(text)
    if not objects:
        got = "is empty" if not _words(text) else (
            f"names no object (understood: {', '.join(understood)})" if understood else "has no known word")
        raise ValueError(f"prompt {text!r} {got}; name at least one colour or shape. Known words: {known_words()}")
    if len(objects) > MAX_OBJECTS:
        raise ValueError(f"prompt {text!r} names {len(objects)} objects; at most {MAX_OBJECTS} are allowed")


def canonical_words(fields: dict) -> list[str]:
    """Parsed fields -> the canonical word sequence the tokenizer encodes."""
    words = [w for pair in fields["objects"] for w in pair]
    return words + [fields["pan"], fields["speed"], fields["motion"], fields["background"]]


def tokenize(text: str | list[str], max_len: int = MAX_TOKENS) -> torch.Tensor:
    """prompt -> LongTensor (max_len,) of canonical token ids, 0 = padding.
    A list of prompts gives (len(list), max_len)."""
    if isinstance(text, (list, tuple)):
        return torch.stack([tokenize(t, max_len) for t in text])
    ids = [TOKEN_ID[w] for w in canonical_words(parse_prompt(text)[0])][:max_len]
    out = torch.zeros(max_len, dtype=torch.long)
    out[: len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def partners(ids: torch.Tensor) -> torch.Tensor:
    """(B, L) canonical ids -> (B, L): for each word of an object's (colour, shape) pair,
    the other word's id; 0 for every other token. Objects lead the canonical order, so a
    pair fills positions (2k, 2k + 1)."""
    length = ids.shape[1]
    if length % 2:
        ids = torch.nn.functional.pad(ids, (0, 1))
    colours = torch.tensor([TOKEN_ID[w] for w in COLOURS], device=ids.device)
    shapes = torch.tensor([TOKEN_ID[w] for w in SHAPES], device=ids.device)
    first, second = ids[:, 0::2], ids[:, 1::2]
    pair = torch.isin(first, colours) & torch.isin(second, shapes)
    return torch.stack([second * pair, first * pair], dim=-1).flatten(1)[:, :length]


class TinyTextEncoder(nn.Module):
    """Token ids (B, L) -> (B, L, text_dim): embedding + position + a small pre-norm
    transformer encoder; padding rows (id 0) are zeroed, as Wan's pipeline does for UMT5.

    bind_objects: each word of an object also gets its partner word's embedding, so both
    tokens of "red square" say red square. Trained from the bare words, the encoder kept
    them apart (a shape's output did not change with its colour: cosine 0.99998), and a
    model reading a bag of words cannot tell which object is red (docs/experiments.md, v14)."""

    def __init__(self, text_dim: int = 64, vocab_size: int = VOCAB_SIZE, max_len: int = MAX_TOKENS,
                 num_layers: int = 2, num_heads: int = 2, ffn_dim: int | None = None, bind_objects: bool = False):
        super().__init__()
        self.max_len, self.bind_objects = max_len, bind_objects
        self.embed = nn.Embedding(vocab_size, text_dim, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(max_len, text_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(text_dim, num_heads, ffn_dim or 4 * text_dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(text_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() == 1:
            ids = ids[None]
        if ids.shape[1] > self.max_len:
            raise ValueError(f"token sequence of length {ids.shape[1]} exceeds max_len={self.max_len}")
        pad = ids == 0
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        if self.bind_objects:
            x = x + self.embed(partners(ids))
        # An all-padding row would make attention NaN: let it attend to its first slot (zeroed below).
        mask = pad.clone()
        mask[mask.all(dim=1), 0] = False
        x = self.norm(self.encoder(x, src_key_padding_mask=mask))
        return x.masked_fill(pad[..., None], 0.0)


def check_objects(objects) -> tuple:
    """The (colour, shape) pairs a world is built from, as tuples; a count or word the
    vocabulary does not have is refused, naming it."""
    objects = tuple(tuple(o) for o in objects)
    if not 1 <= len(objects) <= MAX_OBJECTS:
        raise ValueError(f"objects={objects}: need 1..{MAX_OBJECTS} (colour, shape) pairs")
    for colour, shape in objects:
        if colour not in COLOURS or shape not in SHAPES:
            raise ValueError(f"object ({colour!r}, {shape!r}) not allowed: colours {COLOURS}, shapes {SHAPES}")
    return objects
