"""mask_secrets runs its expressions only on text that can hold a match: it masks exactly what
running them on every text masks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman import redact
from ferryman.redact import MASK, mask_secrets


def every_expression(text: str) -> str:
    """The three substitutions, run whatever the text."""
    text = redact._USERINFO.sub(rf"\g<1>{MASK}\g<2>", text)
    text = redact._PARAMETER.sub(rf"\g<1>{MASK}", text)
    return redact._QUOTED_MEMBER.sub(redact._mask_member, text)


PIECES = st.sampled_from([
    "password", "PassWD", "pa\u017f\u017f", "pwd", "db_secret", "TOKEN", "api-key", "api_\u212aey", "user",
    "=", " = ", ":", "://", "@", "'", '"', "&", "?", " ", "x", "postgresql", "Traceback", "\n", "s3cr3t",
    "ap\u0130_key", "AP\u0131KEY", "KEY", "\u00df", "\t", "#", "/",
])


@settings(max_examples=500)
@given(st.lists(PIECES, max_size=14).map("".join) | st.text(max_size=40))
def test_the_prefilters_change_nothing(text: str) -> None:
    assert mask_secrets(text) == every_expression(text)


def test_names_matched_only_through_case_folding_are_masked() -> None:
    # the long s and the Kelvin sign match "s" and "k" when the expressions ignore case
    assert mask_secrets("pa\u017f\u017fword=hunter2 host=db") == f"pa\u017f\u017fword={MASK} host=db"
    assert mask_secrets("api_\u212aey=abc") == f"api_\u212aey={MASK}"
    # so do both capital I's, the dotted one though it folds to two characters
    assert mask_secrets("ap\u0130_key=abc 'AP\u0131KEY': 'x'") == f"ap\u0130_key={MASK} 'AP\u0131KEY': '{MASK}'"


def test_a_url_without_a_password_and_a_long_traceback_are_kept_as_they_are() -> None:
    label = "store 'dst' (sqlite:////tmp/dst.db, table dst): duplicate key (id)=(3)"
    text = f"Traceback (most recent call last):\n  File \"/x/api_keys.py\", line 3, in f\n{label}"
    assert mask_secrets(text) == text == every_expression(text)
    assert mask_secrets("postgresql://u:pw@db/x") == f"postgresql://u:{MASK}@db/x"
