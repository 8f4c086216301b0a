"""SMS encoding detection and segment counting (SPEC §9).

A body that fits the GSM 03.38 alphabet goes as GSM-7: 160 septets in one segment,
153 per part once it needs several (the rest carries the concatenation header).
Characters of the extension table (`{`, `€`, …) are an escape plus a character, so
they count two septets. Anything else goes as UCS-2: 70 UTF-16 code units in one
segment, 67 per part; a character outside the Basic Multilingual Plane (most emoji)
is a surrogate pair and counts two.

A part never ends between the two septets of an extension character or the two code
units of a surrogate pair, so such a character that would straddle a boundary moves
whole to the next part, and the count follows that split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

# encoding: (units in a single segment, units per part of a multipart message)
LIMITS = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    encoding: Literal["GSM-7", "UCS-2"]
    units: int  # segments billed
    length: int  # septets (GSM-7) or UTF-16 code units (UCS-2)


def count_segments(text: str) -> SegmentInfo:
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        encoding = "GSM-7"
        widths = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    else:
        encoding = "UCS-2"
        widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    single, per_part = LIMITS[encoding]
    length = sum(widths)
    if length <= single:
        return SegmentInfo(encoding, 1, length)
    return SegmentInfo(encoding, _parts(widths, per_part), length)


def _parts(widths: list[int], per_part: int) -> int:
    """Fill parts greedily; a character that does not fit whole starts the next part."""
    parts, used = 1, 0
    for width in widths:
        if used + width > per_part:
            parts, used = parts + 1, 0
        used += width
    return parts
