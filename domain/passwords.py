"""Password strength: what a new password must not be, with the reason in words."""

from __future__ import annotations

from zxcvbn import zxcvbn

ZXCVBN_MAX_LENGTH = 72
MIN_SCORE = 3
"""zxcvbn's "safely unguessable" (about 10^8 guesses and up): what a production control plane asks."""


def password_problem(
    password: str, user_name: str, *, min_score: int = MIN_SCORE, email: str = ""
) -> str | None:
    """Why `password` may not be used by `user_name`, or None when it may.

    Refused: blank or whitespace only, the user name itself (any case), and anything zxcvbn scores
    below `min_score` (0..4), judged with the name and email as words an attacker would try first.
    """
    if not password.strip():
        return "the password is blank (whitespace only)"
    if password.strip().casefold() == user_name.casefold():
        return "the password must not be the user name"
    if min_score <= 0:
        return None
    # zxcvbn refuses more than 72 characters (its cost grows fast); a prefix is no stronger
    # than the whole, so judging the first 72 errs on the safe side
    result = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=[w for w in (user_name, email) if w])
    if result["score"] >= min_score:
        return None
    feedback = result.get("feedback") or {}
    hints = [feedback.get("warning") or "", *(feedback.get("suggestions") or [])]
    reason = " ".join(h for h in hints if h) or "It is too easy to guess."
    return f"the password is too weak (strength {result['score']} of 4, {min_score} needed): {reason}"
