"""Attacks on the digits model's edits (issue 15): does an erased digit stay erased?

Every attack runs against each edited model AND against the original, the control: an
attack that cannot make the original draw the digit proves nothing about an edit.

- ``wordings``: prompts for the erased digit that the edit never saw, by family.
- ``embedding``: a token embedding optimised against the frozen edited model so that its
  noise prediction matches the original's on the erased prompt (textual-inversion style).
- ``refill``: pruned FFN2 entries refilled from the rest of the layer (matrix completion,
  row statistics), with the mask leaked or read off the baked weights' exact zeros; and
  the defence, ``bake --fill decoys`` (fia_engine.decoys), under the same attacks.

``run.py`` runs them on P1 (forget zero..four) and ``report.py`` writes the RESULTS section.
"""

HEADING = "## 13. Attacks: does the erased digit stay erased? (issue 15)"
ATTACKS = ("wordings", "embedding", "refill")
