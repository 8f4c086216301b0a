import pytest

from router.segments import GSM7_BASIC, GSM7_EXTENSION, SegmentInfo, count_segments

CYRILLIC = "ж"  # outside GSM-7, one UTF-16 code unit
EMOJI = "😀"  # outside the BMP: a surrogate pair, two code units


@pytest.mark.parametrize("text, expected", [
    ("", SegmentInfo("GSM-7", 1, 0)),
    ("Hello", SegmentInfo("GSM-7", 1, 5)),
    ("a" * 160, SegmentInfo("GSM-7", 1, 160)),
    ("a" * 161, SegmentInfo("GSM-7", 2, 161)),
    ("a" * 159 + "{", SegmentInfo("GSM-7", 2, 161)),  # '{' is two septets
    ("a" * 158 + "{", SegmentInfo("GSM-7", 1, 160)),
    ("€" * 80, SegmentInfo("GSM-7", 1, 160)),
    ("a" * 153 * 2, SegmentInfo("GSM-7", 2, 306)),
    ("a" * (153 * 2 + 1), SegmentInfo("GSM-7", 3, 307)),
    ("a" * 153 * 3, SegmentInfo("GSM-7", 3, 459)),
    # 306 septets, but '{' cannot straddle the first boundary: 152 | 2 + 152 > 153
    ("a" * 152 + "{" + "a" * 152, SegmentInfo("GSM-7", 3, 306)),
    ("a" * 151 + "{" + "a" * 153, SegmentInfo("GSM-7", 2, 306)),
    (CYRILLIC * 70, SegmentInfo("UCS-2", 1, 70)),
    (CYRILLIC * 71, SegmentInfo("UCS-2", 2, 71)),
    (CYRILLIC * 67 * 2, SegmentInfo("UCS-2", 2, 134)),
    (CYRILLIC * (67 * 2 + 1), SegmentInfo("UCS-2", 3, 135)),
    ("a" * 69 + CYRILLIC, SegmentInfo("UCS-2", 1, 70)),  # one non-GSM char switches encoding
    (EMOJI, SegmentInfo("UCS-2", 1, 2)),
    (EMOJI * 35, SegmentInfo("UCS-2", 1, 70)),
    ("a" * 69 + EMOJI, SegmentInfo("UCS-2", 2, 71)),
    ("a" * 70 + EMOJI, SegmentInfo("UCS-2", 2, 72)),
    # 134 code units, but the pair cannot straddle the first boundary: 66 | 2 + 66 > 67
    (CYRILLIC * 66 + EMOJI + CYRILLIC * 66, SegmentInfo("UCS-2", 3, 134)),
    (CYRILLIC * 65 + EMOJI + CYRILLIC * 67, SegmentInfo("UCS-2", 2, 134)),
])
def test_known_vectors(text, expected):
    assert count_segments(text) == expected


def test_alphabet_sizes():
    # 128 code points minus the escape itself; the extension table as used for SMS
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION


def test_every_extension_character_counts_two():
    for ch in GSM7_EXTENSION:
        assert count_segments(ch) == SegmentInfo("GSM-7", 1, 2)


def test_lowercase_c_cedilla_is_not_gsm():
    # GSM 03.38 has only the capital Ç; ç forces UCS-2
    assert count_segments("ç").encoding == "UCS-2"
