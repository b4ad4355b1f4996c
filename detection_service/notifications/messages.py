"""What an alert says and which alerts are sent: sensitivity levels, template rendering, the
inline keyboard and its callback data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.seed_data import NOTIFICATION_TEMPLATES, OBJECT_TYPES, TEMPLATE_KEY_BY_TYPE

REMOVED_TEMPLATE_KEY: Final = "TEXT_5"
REMOVED_DEFAULT_TEXT: Final = "택배가 치워졌습니다"
DEFAULT_TEXTS: Final[dict[str, str]] = {
    **{t.template_key: t.message_text for t in NOTIFICATION_TEMPLATES},
    REMOVED_TEMPLATE_KEY: REMOVED_DEFAULT_TEXT,
}
TYPE_NAMES: Final[dict[str, str]] = {str(t.code): t.name_ko for t in OBJECT_TYPES}
CAPTION_LIMIT: Final = 1024  # Telegram's limit for photo captions
TEXT_LIMIT: Final = 4096


@dataclass(frozen=True, slots=True)
class Sensitivity:
    min_confidence: float  # events of a classified type below this confidence are not alerted
    cooldown_s: int  # after an alert of a type, further events of that type are quiet this long
    unclassified: bool  # whether 'unclassified' events may alert at all (if in `types`)


# Documented in docs/notifications.md ("Settings").
SENSITIVITY: Final[dict[str, Sensitivity]] = {
    "low": Sensitivity(min_confidence=0.75, cooldown_s=300, unclassified=False),
    "medium": Sensitivity(min_confidence=0.5, cooldown_s=60, unclassified=True),
    "high": Sensitivity(min_confidence=0.0, cooldown_s=15, unclassified=True),
}


def template_key(kind: str, type_code: str) -> str | None:
    if kind == "removed":
        return REMOVED_TEMPLATE_KEY
    if kind == "event":
        return TEMPLATE_KEY_BY_TYPE.get(type_code)  # type: ignore[call-overload]
    return None


def zone(name: str) -> ZoneInfo | type[UTC]:  # type: ignore[valid-type]
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


_PLACEHOLDER = re.compile(r"\{(type|type_code|confidence|time|event_id)\}")


def render(
    template_text: str,
    *,
    kind: str,
    type_code: str,
    confidence: float | None,
    when: datetime,
    event_id: int | None,
    link_base: str | None,
    tz_name: str = "Asia/Seoul",
) -> str:
    """The alert text: the template (placeholders {type} {confidence} {time} {event_id} filled),
    then time, type, confidence and, with a public base URL, a link to the event."""
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    local = aware.astimezone(zone(tz_name))  # type: ignore[arg-type]
    time_text = f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or ''}".strip()
    type_name = TYPE_NAMES.get(type_code, type_code)
    conf_text = f"{confidence * 100:.0f}%" if confidence is not None else "-"
    values = {
        "type": type_name,
        "type_code": type_code,
        "confidence": conf_text,
        "time": time_text,
        "event_id": str(event_id or ""),
    }
    head = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template_text)
    lines = [
        head,
        "",
        f"시간: {time_text}" if kind != "removed" else f"치워진 시간: {time_text}",
        f"유형: {type_name} ({type_code})",
    ]
    if kind == "event":
        lines.append(f"신뢰도: {conf_text}")
    if link_base and event_id:
        lines.append(f"{link_base.rstrip('/')}/api/detections/{event_id}")
    return "\n".join(lines)


def fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- inline keyboard ---------------------------------------------------------------------------

CALLBACK_PREFIX: Final = "rl"
CHOICE_CORRECT: Final = "ok"
CHOICE_FALSE: Final = "fp"
RELABEL_TYPES: Final = ("person", "package", "delivery_food", "mail")


def callback_data(event_id: int, choice: str) -> str:
    return f"{CALLBACK_PREFIX}:{event_id}:{choice}"  # well under Telegram's 64 bytes


def parse_callback(data: str | None) -> tuple[int, str] | None:
    parts = (data or "").split(":")
    if len(parts) != 3 or parts[0] != CALLBACK_PREFIX or not parts[1].isdigit():
        return None
    choice = parts[2]
    if choice not in (CHOICE_CORRECT, CHOICE_FALSE, *RELABEL_TYPES):
        return None
    return int(parts[1]), choice


def keyboard(event_id: int, current_type: str) -> Any:
    """Row 1: correct / false alarm; row 2: the other types (an ``InlineKeyboardMarkup``)."""
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup  # not at import: the pipeline imports us

    first = [
        InlineKeyboardButton("✅ 맞아요", callback_data=callback_data(event_id, CHOICE_CORRECT)),
        InlineKeyboardButton("🚫 오탐", callback_data=callback_data(event_id, CHOICE_FALSE)),
    ]
    others = [
        InlineKeyboardButton(TYPE_NAMES.get(code, code).split("/")[0], callback_data=callback_data(event_id, code))
        for code in RELABEL_TYPES
        if code != current_type
    ]
    return InlineKeyboardMarkup([first, others])


def result_line(choice: str, type_code: str) -> str:
    name = TYPE_NAMES.get(type_code, type_code).split("/")[0]
    if choice == CHOICE_CORRECT:
        return f"✅ 확인됨: {name}"
    if choice == CHOICE_FALSE:
        return "🚫 오탐으로 표시됨"
    return f"✏️ {name}(으)로 변경됨"
