"""Bad-input cases shared by tests/test_bad_input*.py (and docs/reliability.md)."""
from dataclasses import dataclass

@dataclass(frozen=True)
class BadInput:
    id: str         # pytest id
    what: str       # the input as a user types it
    message: str    # the substring of the message the user sees (asserted)
    guarantee: str  # what is guaranteed not to be written half or lost
