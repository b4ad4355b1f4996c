"""The champion/challenger gate: a new model replaces the deployed one only if it is better on
the same evaluation split (unless a person forces it)."""

from __future__ import annotations

import msgspec

# mAP50 may drop by at most this much while mAP50-95 (the stricter, box-quality metric) improves.
MAP50_TOLERANCE = 0.01


class GateVerdict(msgspec.Struct, kw_only=True):
    passed: bool
    reason: str
    challenger_id: str
    champion_id: str | None
    split: str
    challenger: dict[str, float]
    champion: dict[str, float] | None


def judge(
    challenger_id: str, challenger: dict[str, float], champion_id: str | None, champion: dict[str, float] | None,
    split: str,
) -> GateVerdict:
    def verdict(passed: bool, reason: str) -> GateVerdict:
        return GateVerdict(passed=passed, reason=reason, challenger_id=challenger_id, champion_id=champion_id,
                           split=split, challenger=challenger, champion=champion)

    if champion_id is None or champion is None:
        return verdict(True, "no champion deployed")
    if champion_id == challenger_id:
        return verdict(True, "already the champion")
    c50, c5095 = challenger.get("map50", 0.0), challenger.get("map50_95", 0.0)
    h50, h5095 = champion.get("map50", 0.0), champion.get("map50_95", 0.0)
    if c5095 > h5095 and c50 >= h50 - MAP50_TOLERANCE:
        return verdict(True, f"mAP50-95 {c5095:.4f} > {h5095:.4f} (mAP50 {c50:.4f} vs {h50:.4f})")
    return verdict(False, f"not better than {champion_id} on {split}: mAP50-95 {c5095:.4f} vs {h5095:.4f}, "
                          f"mAP50 {c50:.4f} vs {h50:.4f}")
