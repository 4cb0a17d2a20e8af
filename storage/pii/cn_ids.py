"""The check of a mainland-China resident identity number (GB 11643-1999): 6-digit area code,
birth date YYYYMMDD, 3-digit sequence, and an ISO 7064 MOD 11-2 check character (0-9 or X).
Pure Python, so the bench can make valid numbers without loading Presidio."""

import datetime

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"
EARLIEST_BIRTH = datetime.date(1900, 1, 1)


def check_char(first17: str) -> str:
    """The check character that completes 17 digits."""
    return CHECK_CHARS[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def birth_date(value: str) -> datetime.date | None:
    """The birth date written in an 18-character number, or None if there is no such day
    (Feb 30, month 13), or it lies before 1900 or after today."""
    try:
        born = datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None
    return born if EARLIEST_BIRTH <= born <= datetime.date.today() else None


def is_valid_resident_id(value: str) -> bool:
    """18 characters, 17 digits then the right check character, and a real birth date."""
    if len(value) != 18 or not value[:17].isascii() or not value[:17].isdigit():
        return False
    if birth_date(value) is None:
        return False
    return value[17].upper() == check_char(value[:17])
