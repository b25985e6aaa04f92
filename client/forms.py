"""The tablet app's forms: what a worker may choose from (the catalogues), and turning a submitted form
into record values, with every mistake explained in Chinese next to its field.

A form is checked whole before anything is written: ``parse`` returns the values and a dict of errors,
and a caller writes only when the errors are empty. Types and catalogues are checked by the schema
(``SCHEMA.validate``), so the app accepts exactly what a sync would; values are checked further by
``sync.checks`` (real dates, ID numbers, phones), as the workbench and the CLI check them. The messages
here only say it the way a village worker understands.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sync import checks
from sync.errors import InvalidValue
from sync.reference import keep_current
from sync.schema import (
    CATEGORIES, GENDERS, GROUPS, NEED_TRANSITIONS, PROVIDER_KINDS, SCHEMA, STATUSES, URGENCIES,
)
from sync.types import ADD, SET

from .tablet import Tablet


@dataclass(frozen=True)
class Catalogues:
    "The lists a worker chooses from"

    groups: tuple[str, ...]
    categories: tuple[str, ...]
    service_types: tuple[str, ...]
    urgencies: tuple[str, ...]
    provider_kinds: tuple[str, ...]
    genders: tuple[str, ...]
    statuses: tuple[str, ...]

    def of(self, name: str, record: Any = None) -> list[str]:
        """The choices of ``category`` or ``service_type``; in an edit form, with the edited ``record``'s own
        value kept among them even when it is no longer offered (a retired catalogue code)"""
        codes = list(self.categories if name == "category" else self.service_types)
        return keep_current(codes, record.data.get(name) if record else None)


def catalogues(tablet: Tablet | None = None) -> Catalogues:
    """The catalogues the tablet's forms offer: need categories and service types, the built-in lists of
    ``sync.schema`` together with the catalogues synced from above (``sync.reference.offered``)"""
    categories: tuple[str, ...] = CATEGORIES
    service_types: tuple[str, ...] = CATEGORIES
    if tablet is not None:
        categories, service_types = tuple(tablet.need_categories()), tuple(tablet.service_types())
    return Catalogues(groups=GROUPS, categories=categories, service_types=service_types, urgencies=URGENCIES,
                      provider_kinds=PROVIDER_KINDS, genders=GENDERS, statuses=STATUSES)


#: Which fields each form edits, in the order the form shows them
FIELDS = {
    "person": ("name", "gender", "birth_date", "id_number", "phone", "address", "groups", "notes"),
    "need": ("category", "description", "urgency", "due_date", "status", "assignee"),
    "service": ("need", "service_type", "provider_kind", "provider_name", "served_at", "minutes",
                "people_served", "notes"),
}
_INTS = {"minutes", "people_served"}
_CHOICES = {"gender", "category", "urgency", "status", "service_type", "provider_kind"}
_FORMAT_HELP = {
    "name": "姓名最多60个字",
    "id_number": "身份证号应为18位：前17位是数字，最后一位是数字或X",
    "phone": "电话号码只能填数字（可带 + 或 -），5到20位",
    "birth_date": "出生日期应按 年-月-日 填写，例如 1942-03-08",
    "due_date": "截止日期应按 年-月-日 填写，例如 2024-06-30",
    "served_at": "服务时间应按 年-月-日 时:分 填写，例如 2024-05-01 09:30",
    "minutes": "服务时长应为0到100000之间的整数（分钟）",
    "people_served": "服务人次应为0到100000之间的整数",
}


def label(coll: str, name: str) -> str:
    f = SCHEMA.collections[coll].fields.get(name)
    return f.label if f else name


def _message(coll: str, name: str) -> str:
    if name in _FORMAT_HELP:
        return _FORMAT_HELP[name]
    if name in _CHOICES or name == "groups":
        return f"请从列表中选择{label(coll, name)}"
    return f"{label(coll, name)}最多2000个字"


def _text(form: Mapping[str, Any], name: str) -> str:
    v = form.get(name)
    return v.strip() if isinstance(v, str) else ""


def parse(coll: str, form: Any, *, editing: bool = False, before: Mapping[str, Any] | None = None,
          codes: Callable[[str], Collection[str]] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The values a submitted form gives one collection's record, and the errors by field name.

    ``form`` is Starlette's ``FormData`` (``getlist`` for checkboxes) or a plain mapping. Blank fields
    are ``None`` (left unset on create, cleared on edit); groups are a list. Digits typed full-width
    (５１０９…) are taken as ASCII. A valid ID number fills in a blank birth date and gender, and must
    agree with them when they are given. ``codes(kind)`` gives the codes of a catalogue synced from
    above, which catalogue fields take beside the built-in ones.

    ``before``, on an edit, is the record as the form showed it: a field sent back as it was shown
    (``checks.sent_back``: compared before full-width digits are made ASCII, a date the browser could not
    show sent back empty) is left out of the values and not checked, so that a value saved before a check
    existed (or by a node that did not check it) is neither rewritten nor blocks the worker's change to
    another field.
    """
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    shown = as_form(before) if before is not None else None
    for name in FIELDS[coll]:
        if name == "status" and not editing:
            continue
        if name == "groups":
            raw = form.getlist(name) if hasattr(form, "getlist") else list(form.get(name) or [])
            picked = [str(g) for g in raw if str(g).strip()]
            if shown is not None and set(picked) == set(shown.get(name) or []):
                continue
            try:
                values[name] = [SCHEMA.validate(coll, name, ADD, g) for g in dict.fromkeys(picked)]
            except InvalidValue:
                errors[name] = _message(coll, name)
            continue
        typed = _text(form, name)
        if shown is not None and checks.sent_back(coll, name, typed, shown.get(name)):
            continue
        text = checks.normalize(name, typed)
        if name == "id_number":
            text = text.upper().replace(" ", "")
        if name == "served_at":
            text = text.replace(" ", "T", 1)
        if shown is not None and text == str(shown.get(name, "")):
            continue  # typed again as it was, full-width say
        value: Any = text or None
        if value is not None and name in _INTS:
            if not re.fullmatch(r"[0-9]{1,6}", text):
                errors[name] = _message(coll, name)
                continue
            value = int(text)
        if value is None and SCHEMA.collections[coll].fields[name].required:
            values[name] = None  # reported as missing below
            continue
        problem = checks.check(coll, name, value)
        if problem is not None:
            errors[name] = problem.zh
            continue
        try:
            values[name] = SCHEMA.validate(coll, name, SET, value, codes)
        except InvalidValue:
            errors[name] = _message(coll, name)
    for name, f in SCHEMA.collections[coll].fields.items():
        if f.required and name in values and values[name] is None:
            errors[name] = (f"请选择{f.label}" if name in _CHOICES else f"请填写{f.label}")
    if coll == "person":
        _id_number_agrees(values, errors, before or {})
    return values, errors


def _id_number_agrees(values: dict[str, Any], errors: dict[str, str], before: Mapping[str, Any]) -> None:
    """Birth date and gender from a valid ID number: filled in when blank, checked against it when one
    of the three changed (``values``; ``before`` holds the rest)"""
    person = {k: v for k, v in {**before, **values}.items() if k not in errors}
    idn = person.get("id_number")
    facts = checks.id_number_facts(idn) if isinstance(idn, str) else None
    if facts is None:
        return
    for name, stated in zip(("birth_date", "gender"), facts):
        if person.get(name) is None and name not in errors:
            values[name] = person[name] = stated
    for name, problem in checks.disagreements(person, values).items():
        errors.setdefault(name, problem.zh)


def allowed_statuses(current: str | None) -> tuple[str, ...]:
    "The statuses a need may be moved to from its current one (the current one first)"
    if current is None:
        return STATUSES
    return (current, *NEED_TRANSITIONS.get(current, ()))


def as_form(data: Mapping[str, Any]) -> dict[str, Any]:
    "A record's values as a form shows them again"
    out = {k: ("" if v is None else v) for k, v in data.items()}
    if isinstance(out.get("served_at"), str):
        out["served_at"] = out["served_at"][:16]
    return out
