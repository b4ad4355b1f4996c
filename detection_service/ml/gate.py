"""The champion/challenger gate: a new model replaces the deployed one only if it is better on
the same fixed evaluation set (unless a person forces it).

The rule (docs/evaluation.md), on the per-class numbers of both models on one evaluation set:

1. **Keep what the champion knows.** For every class with labels in the set that the champion
   *knows* (its mAP50 on that class >= ``KNOWN_MAP50``), the challenger's mAP50 on that class may
   be at most ``CLASS_TOLERANCE`` lower. A challenger that gets better at parcels by forgetting
   people fails here, whatever its mean says.
2. **Improve overall.** The challenger's mean mAP50-95 over the set's classes must be higher than
   the champion's, and its mean mAP50 not more than ``MAP50_TOLERANCE`` lower.

No champion: the challenger passes. The same model: passes ("already the champion").
"""

from __future__ import annotations

from typing import Any

import msgspec

# mAP50 may drop by at most this much while mAP50-95 (the stricter, box-quality metric) improves.
MAP50_TOLERANCE = 0.01
# Largest per-class mAP50 loss accepted on a class the champion knows.
CLASS_TOLERANCE = 0.02
# The champion "knows" a class when its mAP50 on it reaches this; below it is noise.
KNOWN_MAP50 = 0.05
RULE = (
    f"every class the champion knows (mAP50 >= {KNOWN_MAP50}) loses at most {CLASS_TOLERANCE} mAP50, "
    f"and overall mAP50-95 is higher with mAP50 at most {MAP50_TOLERANCE} lower"
)


class ClassVerdict(msgspec.Struct, kw_only=True):
    name: str
    instances: int
    challenger: dict[str, float]
    champion: dict[str, float] | None
    known: bool  # the champion knows the class (rule 1 applies)
    ok: bool


class GateVerdict(msgspec.Struct, kw_only=True):
    passed: bool
    reason: str
    challenger_id: str
    champion_id: str | None
    split: str  # what both were evaluated on, e.g. "evaluation-set@v2"
    challenger: dict[str, float]
    champion: dict[str, float] | None
    per_class: list[ClassVerdict] = msgspec.field(default_factory=list)
    rule: str = RULE


_KEYS = ("map50", "map50_95", "precision", "recall")


def _numbers(entry: dict[str, Any] | None) -> dict[str, float]:
    return {k: float(entry.get(k, 0.0)) for k in _KEYS} if entry else dict.fromkeys(_KEYS, 0.0)


def judge(
    challenger_id: str,
    challenger: dict[str, float],
    champion_id: str | None,
    champion: dict[str, float] | None,
    split: str,
    challenger_per_class: list[dict[str, Any]] | None = None,
    champion_per_class: list[dict[str, Any]] | None = None,
) -> GateVerdict:
    """Apply the rule of the module docstring. ``*_per_class``: dicts with name, instances, map50,
    map50_95, precision, recall (classes with labels in the set)."""
    challenger = {k: float(v) for k, v in challenger.items() if k in _KEYS}
    champion = {k: float(v) for k, v in champion.items() if k in _KEYS} if champion is not None else None
    by_name_c = {e["name"]: e for e in challenger_per_class or []}
    by_name_h = {e["name"]: e for e in champion_per_class or []}
    per_class: list[ClassVerdict] = []
    for name in dict.fromkeys([*by_name_h, *by_name_c]):
        ours, theirs = by_name_c.get(name), by_name_h.get(name)
        instances = int((ours or theirs or {}).get("instances", 0))
        c, h = _numbers(ours), (_numbers(theirs) if champion is not None else None)
        known = h is not None and h["map50"] >= KNOWN_MAP50
        ok = not known or c["map50"] >= h["map50"] - CLASS_TOLERANCE
        per_class.append(ClassVerdict(name=name, instances=instances, challenger=c, champion=h, known=known, ok=ok))

    def verdict(passed: bool, reason: str) -> GateVerdict:
        return GateVerdict(
            passed=passed,
            reason=reason,
            challenger_id=challenger_id,
            champion_id=champion_id,
            split=split,
            challenger=challenger,
            champion=champion,
            per_class=per_class,
        )

    if champion_id is None or champion is None:
        return verdict(True, "no champion deployed")
    if champion_id == challenger_id:
        return verdict(True, "already the champion")
    c50, c5095 = challenger.get("map50", 0.0), challenger.get("map50_95", 0.0)
    h50, h5095 = champion.get("map50", 0.0), champion.get("map50_95", 0.0)
    forgotten = [v for v in per_class if not v.ok]
    if forgotten:
        lost = ", ".join(f"{v.name} mAP50 {v.challenger['map50']:.4f} vs {v.champion['map50']:.4f}" for v in forgotten)
        return verdict(
            False, f"loses more than {CLASS_TOLERANCE} mAP50 on what {champion_id} knows ({lost}) on {split}"
        )
    if c5095 > h5095 and c50 >= h50 - MAP50_TOLERANCE:
        return verdict(
            True,
            f"mAP50-95 {c5095:.4f} > {h5095:.4f} (mAP50 {c50:.4f} vs {h50:.4f}) on {split}, "
            "no class the champion knows got worse",
        )
    return verdict(
        False,
        f"not better than {champion_id} on {split}: mAP50-95 {c5095:.4f} vs {h5095:.4f}, mAP50 {c50:.4f} vs {h50:.4f}",
    )
