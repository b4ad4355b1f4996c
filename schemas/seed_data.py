"""Reference rows every installation starts with.

Migration ``0002_seed_rows`` inserts a frozen copy of these rows (a migration must keep doing
what it did when it was written); ``tests/test_schema.py`` checks that the copy and this module
still agree.
"""

from __future__ import annotations

from typing import Final, NamedTuple, TypedDict

from schemas.enums import ObjectTypeCode
from schemas.settings import SETTINGS_CATEGORIES, encode_setting_value, field_description


class ObjectTypeSeed(NamedTuple):
    code: ObjectTypeCode
    name_ko: str  # stored in object_types.name
    name_en: str
    description: str  # stored in object_types.description


class TemplateSeed(NamedTuple):
    template_key: str
    object_type_code: ObjectTypeCode
    message_text: str


class SettingRow(TypedDict):
    category: str
    setting_key: str
    setting_value: str
    data_type: str
    description: str | None


OBJECT_TYPES: Final[tuple[ObjectTypeSeed, ...]] = (
    ObjectTypeSeed(ObjectTypeCode.PERSON, "사람", "Person", "A person at the door"),
    ObjectTypeSeed(ObjectTypeCode.PACKAGE, "택배/패키지", "Package", "A parcel or package left at the door"),
    ObjectTypeSeed(ObjectTypeCode.DELIVERY_FOOD, "배달음식", "Food delivery", "A food delivery left at the door"),
    ObjectTypeSeed(ObjectTypeCode.MAIL, "우편물", "Mail", "Letters or other mail"),
    ObjectTypeSeed(ObjectTypeCode.UNCLASSIFIED, "미분류", "Unclassified", "An object the model could not classify"),
)

# The seed's alert texts, verbatim (TEXT_0 alone ends with a full stop in the seed).
NOTIFICATION_TEMPLATES: Final[tuple[TemplateSeed, ...]] = (
    TemplateSeed("TEXT_0", ObjectTypeCode.UNCLASSIFIED, "미분류 객체가 감지되었습니다."),
    TemplateSeed("TEXT_1", ObjectTypeCode.PERSON, "사람이 감지되었습니다"),
    TemplateSeed("TEXT_2", ObjectTypeCode.PACKAGE, "택배가 도착했습니다"),
    TemplateSeed("TEXT_3", ObjectTypeCode.DELIVERY_FOOD, "배달음식이 도착했습니다"),
    TemplateSeed("TEXT_4", ObjectTypeCode.MAIL, "우편물이 도착했습니다"),
)

TEMPLATE_KEY_BY_TYPE: Final[dict[ObjectTypeCode, str]] = {
    t.object_type_code: t.template_key for t in NOTIFICATION_TEMPLATES
}


def default_setting_rows() -> list[SettingRow]:
    """One ``system_settings`` row per field of every settings struct, holding its default."""
    rows: list[SettingRow] = []
    for category, struct_type in SETTINGS_CATEGORIES.items():
        defaults = struct_type()
        for name in struct_type.__struct_fields__:
            value, data_type = encode_setting_value(getattr(defaults, name))
            rows.append(
                SettingRow(
                    category=category,
                    setting_key=name,
                    setting_value=value,
                    data_type=data_type.value,
                    description=field_description(struct_type, name),
                )
            )
    return rows


def _check() -> None:
    # Import-time guard: every object type has exactly one template.
    codes = {t.code for t in OBJECT_TYPES}
    if codes != set(ObjectTypeCode) or set(TEMPLATE_KEY_BY_TYPE) != codes:
        raise RuntimeError("seed data out of step with ObjectTypeCode")


_check()
