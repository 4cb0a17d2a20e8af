"""Regular expressions the REST API's published schema states for texts, so a client can
check a value before sending it (the parameters models check the same again)."""

# What str.strip() removes (str.isspace), spelled out so every regex dialect agrees.
SPACE = "\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TRIMMED = f"^[^\\x00{SPACE}](?:[^\\x00]*[^\\x00{SPACE}])?$"  # not blank, no NUL
# A template over an item's fields: text, doubled braces, {field} (ASCII names; the SDK and
# CLI also take other identifiers).
_PIECE = r"(?:[^{}\x00]|\{\{|\}\}|\{[A-Za-z_][A-Za-z0-9_]*\})"
TEMPLATE = f"^{_PIECE}*$"
# The same with something besides blanks in it (a question, a context).
_SHOWN = f"(?:[^{{}}\\x00{SPACE}]|\\{{\\{{|\\}}\\}}|\\{{[A-Za-z_][A-Za-z0-9_]*\\}})"
NON_BLANK_TEMPLATE = f"^{_PIECE}*{_SHOWN}{_PIECE}*$"
