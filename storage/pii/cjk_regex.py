"""Rewrite a recognizer's regex so it still matches when the value touches CJK text.

Python's `regex` counts Chinese (and Japanese, Korean) characters as word characters (`\\w`), so
Presidio's `\\b`-anchored patterns fail on "手机13812345678。" or "发到john@x.com谢谢": there is no
word boundary between 到 and j. The rewrite narrows "word character" to the alphabetic scripts
(ASCII letters, digits, `_`, Latin-1 and Latin Extended letters, Greek, Cyrillic), both in `\\w`
and in the boundaries `\\b`, and leaves the rest of the pattern (and so the recognizer's checksum
logic, which runs on the match) as Presidio wrote it."""

# The characters that still count as "word" (inside a character class, without brackets).
WORD_CHARS = "0-9A-Za-z_\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0370-\u03ff\u0400-\u052f"
WORD = f"[{WORD_CHARS}]"
NOT_WORD_BEFORE = f"(?<!{WORD})"
NOT_WORD_AFTER = f"(?!{WORD})"
# `\b` between a word character and anything else (or the start or end of the text).
BOUNDARY = f"(?:{NOT_WORD_BEFORE}(?={WORD})|(?<={WORD}){NOT_WORD_AFTER})"


def cjk_safe(pattern: str) -> str:
    """`pattern` with `\\b` and `\\w` narrowed to the alphabetic scripts (see the module doc).
    `\\w` inside a character class becomes the ranges themselves; escapes such as `\\\\b` (a
    literal backslash then b) and `\\W`, `\\B` are left alone."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            if escaped == "w":
                out.append(WORD_CHARS if in_class else WORD)
            elif escaped == "b" and not in_class:
                out.append(BOUNDARY)
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append(char)
            i += 1
            # A `]` right after `[` or `[^` is a literal, not the end of the class.
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("]")
                i += 1
            continue
        if char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)
