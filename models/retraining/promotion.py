"""When may a retrained challenger replace the champion? Pure functions, no I/O.

Two decisions, at two moments of a retraining cycle:

- `evaluate_gate`, offline, right after retraining: the challenger must lose no more than `delta_points`
  points of macro-F1 on the frozen reference holdout (it must not unlearn the reference data) and must be
  strictly more accurate than the champion on the new corrections held back from its training (it must
  have learnt something that generalises beyond the very rows it saw).
- `shadow_verdict`, online, after both models scored the same live corrections side by side: the
  challenger must be right more often where the two disagree, and significantly so by the exact McNemar
  test on those discordant pairs (`mcnemar_exact`), over at least `min_items` scored items.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from scipy.stats import binomtest


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value; b = pairs only the champion got right, c = only the challenger.

    Under the null hypothesis each discordant pair is a fair coin, so the p-value is the two-sided binomial
    test of min(b, c) successes in b + c trials at 0.5 (1.0 with no discordant pair).
    """
    if b < 0 or c < 0:
        raise ValueError("b and c are counts")
    if b + c == 0:
        return 1.0
    return float(binomtest(min(b, c), b + c, 0.5).pvalue)


def _points(value: float) -> float:
    """A [0, 1] metric difference in percentage points, rounded for reports."""
    return round(100.0 * value, 4)


@dataclass(frozen=True)
class GateResult:
    eligible: bool
    reasons: list[str]  # human sentences: why not eligible, or why eligible
    delta_points: float
    reference: dict[str, Any] = field(default_factory=dict)
    corrections: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_gate(
    *,
    reference_rows: int,
    champion_reference_f1: float,
    challenger_reference_f1: float,
    correction_rows: int,
    champion_correction_accuracy: float,
    challenger_correction_accuracy: float,
    delta_points: float = 0.5,
) -> GateResult:
    """Eligible iff challenger_reference_f1 >= champion_reference_f1 - delta_points / 100, and there are
    held-back corrections, and the challenger's accuracy on them is strictly higher than the champion's."""
    reference_change = challenger_reference_f1 - champion_reference_f1
    correction_change = challenger_correction_accuracy - champion_correction_accuracy
    keeps_reference = challenger_reference_f1 >= champion_reference_f1 - delta_points / 100.0
    gains = correction_rows > 0 and challenger_correction_accuracy > champion_correction_accuracy
    reference_text = (
        f"macro-F1 on the reference holdout ({reference_rows} rows) {champion_reference_f1:.4f} → "
        f"{challenger_reference_f1:.4f} ({_points(reference_change):+.2f} points)"
    )
    correction_text = (
        f"accuracy on the {correction_rows} held-back corrections {champion_correction_accuracy:.4f} → "
        f"{challenger_correction_accuracy:.4f} ({_points(correction_change):+.2f} points)"
    )
    failing = []
    if not keeps_reference:
        failing.append(f"{reference_text}: loses more than the allowed {delta_points} points")
    if correction_rows == 0:
        failing.append("no new corrections were held back, so no gain on them can be shown")
    elif not gains:
        failing.append(f"{correction_text}: no gain over the champion")
    reasons = failing or [
        f"{reference_text}: within the allowed loss of {delta_points} points",
        f"{correction_text}: a gain",
    ]
    return GateResult(
        eligible=keeps_reference and gains,
        reasons=reasons,
        delta_points=delta_points,
        reference={
            "rows": reference_rows,
            "champion_macro_f1": champion_reference_f1,
            "challenger_macro_f1": challenger_reference_f1,
            "change_points": _points(reference_change),
        },
        corrections={
            "rows": correction_rows,
            "champion_accuracy": champion_correction_accuracy,
            "challenger_accuracy": challenger_correction_accuracy,
            "change_points": _points(correction_change),
        },
    )


@dataclass(frozen=True)
class ShadowVerdict:
    significant: bool
    p_value: float
    b: int  # only the champion right
    c: int  # only the challenger right
    reasons: list[str]
    scored: int = 0
    agreed: int = 0
    both_right: int = 0
    both_wrong: int = 0
    min_items: int = 0
    alpha: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The verdict with agreement rate, paired n and both models' accuracy on the paired items."""
        paired = self.b + self.c + self.both_right + self.both_wrong
        return {
            "significant": self.significant,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "min_items": self.min_items,
            "scored": self.scored,
            "agreed": self.agreed,
            "agreement_rate": self.agreed / self.scored if self.scored else None,
            "paired": paired,
            "b_champion_only_right": self.b,
            "c_challenger_only_right": self.c,
            "both_right": self.both_right,
            "both_wrong": self.both_wrong,
            "champion_accuracy": (self.both_right + self.b) / paired if paired else None,
            "challenger_accuracy": (self.both_right + self.c) / paired if paired else None,
            "reasons": list(self.reasons),
        }


def shadow_verdict(
    *,
    scored: int,
    agreed: int,
    b: int,
    c: int,
    both_right: int,
    both_wrong: int,
    min_items: int,
    alpha: float,
) -> ShadowVerdict:
    """Significant iff scored >= min_items, c > b and mcnemar_exact(b, c) < alpha.

    `scored`/`agreed`: items both models scored and how many they labelled alike; b, c, both_right and
    both_wrong: the paired outcomes on the items with a known true label (corrections).
    """
    p_value = mcnemar_exact(b, c)
    reasons = []
    if scored < min_items:
        reasons.append(f"only {scored} items scored in shadow, {min_items} needed")
    if c <= b:
        reasons.append(
            f"the challenger is not right more often where the models disagree "
            f"({c} challenger-only vs {b} champion-only right)"
        )
    if p_value >= alpha:
        reasons.append(f"McNemar exact p = {p_value:.4g} on {b + c} discordant pairs is not below {alpha}")
    significant = not reasons
    if significant:
        reasons.append(
            f"the challenger is right on {c} items the champion got wrong and wrong on {b} it got right "
            f"(McNemar exact p = {p_value:.4g} < {alpha}) over {scored} items"
        )
    return ShadowVerdict(
        significant=significant,
        p_value=p_value,
        b=b,
        c=c,
        reasons=reasons,
        scored=scored,
        agreed=agreed,
        both_right=both_right,
        both_wrong=both_wrong,
        min_items=min_items,
        alpha=alpha,
    )
