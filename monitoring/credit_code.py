"""Check an enterprise's unified social credit code (统一社会信用代码, GB 32100-2015).

The code has 18 characters over ``0123456789ABCDEFGHJKLMNPQRTUWXY`` (no I, O, S, V, Z); the last
is a check character: 31 minus the weighted sum (weights 3^i mod 31) of the first 17, mod 31.
python-stdnum (``stdnum.cn.uscc``) computes it; this module turns its exceptions into messages
that say what is wrong and how to fix it (docs/architecture.md says why the library).

>>> check_credit_code("91110000 600037341l")
'91110000600037341L'
"""

from __future__ import annotations

from stdnum import exceptions
from stdnum.cn import uscc

__all__ = ["CreditCodeError", "check_credit_code", "check_digit"]


class CreditCodeError(ValueError):
    """The text is not a valid credit code; the message says why (length, character, check)."""


def check_digit(first_17: str) -> str:
    """The check character GB 32100-2015 gives for the first 17 characters."""
    return str(uscc.calc_check_digit(first_17))


def check_credit_code(text: str) -> str:
    """The code in its stored form (upper case, spaces and hyphens removed) if it is valid.

    Raises:
        CreditCodeError: wrong length, a character outside the alphabet, or a wrong check
            character (the message names the one the first 17 characters give).
    """
    code = str(uscc.compact(text))
    try:
        return str(uscc.validate(code))
    except exceptions.InvalidLength:
        raise CreditCodeError(
            f"{text!r} has {len(code)} characters; a credit code has 18"
        ) from None
    except exceptions.InvalidFormat:
        raise CreditCodeError(
            f"{text!r}: characters 1-8 must be digits and 9-18 digits or letters "
            "A-Y without I, O, S, V, Z"
        ) from None
    except exceptions.InvalidChecksum:
        raise CreditCodeError(
            f"{text!r} has the check character {code[-1]!r} but its first 17 characters give "
            f"{check_digit(code[:17])!r}: a character is mistyped"
        ) from None
