"""The credit code check: real codes pass, every single-character change is caught, and the
library's check character agrees with GB 32100-2015's formula written out here."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.credit_code import CreditCodeError, check_credit_code, check_digit

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
# Published codes of well-known companies (business licences are public in China).
REAL_CODES = (
    "91110000600037341L",  # the example in python-stdnum's documentation
    "914403001922038216",  # Huawei Technologies Co., Ltd.
    "9144030071526726XG",  # Tencent Technology (Shenzhen) Co., Ltd.
    "91330100716105852F",  # Alibaba (China) Co., Ltd.
)


def standard_check_character(first_17: str) -> str:
    """GB 32100-2015 §5: C18 = 31 - (Σ Ci × Wi mod 31), Wi = 3^(i-1) mod 31; 31 becomes 0."""
    total = sum(ALPHABET.index(c) * pow(3, i, 31) for i, c in enumerate(first_17))
    return ALPHABET[(31 - total % 31) % 31]


@pytest.mark.parametrize("code", REAL_CODES)
def test_real_codes_pass_and_agree_with_the_standard(code: str) -> None:
    assert check_credit_code(code) == code
    assert check_digit(code[:17]) == standard_check_character(code[:17]) == code[-1]


def test_lower_case_and_separators_are_normalized() -> None:
    assert check_credit_code(" 9144 0300-7152 6726xg ") == "9144030071526726XG"


@pytest.mark.parametrize("code", REAL_CODES)
def test_every_single_character_change_is_rejected(code: str) -> None:
    for position in range(18):
        for replacement in ALPHABET:
            if replacement == code[position]:
                continue
            mutated = code[:position] + replacement + code[position + 1 :]
            if position < 8 and not replacement.isdigit():
                continue  # the format check catches these; the checksum loop below tests it
            with pytest.raises(CreditCodeError):
                check_credit_code(mutated)


def test_wrong_check_character_names_the_right_one() -> None:
    with pytest.raises(CreditCodeError, match=r"check character 'A'.*give 'L'"):
        check_credit_code("91110000600037341A")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("9111000060003734", "16 characters"),
        ("91110000600037341LX", "19 characters"),
        ("9111000060003734OL", "without I, O, S, V, Z"),
        ("A1110000600037341L", "characters 1-8 must be digits"),
    ],
)
def test_malformed_codes_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(CreditCodeError, match=says):
        check_credit_code(text)


@given(
    st.text(alphabet="0123456789", min_size=8, max_size=8),
    st.text(alphabet=ALPHABET, min_size=9, max_size=9),
)
def test_library_check_character_matches_the_standard_formula(digits: str, org: str) -> None:
    first_17 = digits + org
    expected = standard_check_character(first_17)
    assert check_digit(first_17) == expected
    assert check_credit_code(first_17 + expected) == first_17 + expected


def test_demo_enterprises_have_valid_distinct_codes() -> None:
    demo = Path(__file__).resolve().parents[3] / "shulian" / "demo_data" / "enterprises.csv"
    with demo.open(encoding="utf-8") as file:
        codes = [row["credit_code"] for row in csv.DictReader(file)]
    assert codes and all(check_credit_code(code) == code for code in codes)
    assert len(set(codes)) == len(codes)
