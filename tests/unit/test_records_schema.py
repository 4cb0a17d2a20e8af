"""Records against a model's feature schema: every bad row is refused with its column named."""

import math

from schemas.records import check_record

FEATURES = [
    {"name": "age", "type": "integer", "min": 0, "max": 120, "mean": 40, "std": 10},
    {"name": "income", "type": "number", "min": 0, "max": 1e6, "mean": 5e4, "std": 1e4},
    {"name": "member", "type": "boolean", "mean": 0.5, "std": 0.5},
]


def test_good_rows_are_converted_whatever_the_file_format():
    assert check_record({"age": 30, "income": 1000.5, "member": True}, FEATURES) == (
        {"age": 30.0, "income": 1000.5, "member": 1.0},
        None,
    )
    # CSV gives strings.
    assert check_record(
        {"age": "30", "income": "1e3", "member": "false", "id": "k"}, FEATURES, ignore=("id",)
    ) == ({"age": 30.0, "income": 1000.0, "member": 0.0}, None)


def test_each_bad_row_names_its_column():
    good = {"age": 30, "income": 1000, "member": 1}
    cases = [
        ({**good, "income": math.nan}, "column 'income' is NaN"),
        ({**good, "income": "nan"}, "column 'income' is NaN"),
        ({**good, "income": math.inf}, "column 'income' is infinite"),
        ({**good, "age": "thirty"}, "column 'age' must be a number, got 'thirty'"),
        ({**good, "age": 30.5}, "column 'age' must be an integer"),
        ({**good, "age": [30]}, "column 'age' must be a number, got list"),
        ({**good, "member": "maybe"}, "column 'member' must be a boolean"),
        ({"age": 30, "member": 1}, "missing column 'income'"),
        ({**good, "income": ""}, "missing column 'income'"),
        ({**good, "shoe_size": 42}, "unexpected column(s) 'shoe_size'"),
        ({**good, "age": 130}, "column 'age' = 130 is outside the allowed range [0, 120]"),
        ({**good, "age": True}, "column 'age' must be a number, got bool"),
    ]
    for row, message in cases:
        values, problem = check_record(row, FEATURES)
        assert values is None and problem is not None and message in problem, (row, problem)
