"""Plausible sample residents, needs and services for demos and benchmarks. All names are invented."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from sync import checks
from sync.schema import CATEGORIES, PROVIDER_KINDS, URGENCIES

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董袁潘"
GIVEN = "秀英桂兰玉兰淑珍建华国强志明文杰丽娟海燕俊杰子涵欣怡浩然雨轩梓萱明辉春梅德福永安"
STREETS = ("育才路", "和平街", "广场巷", "滨江路", "明月路", "南津路", "石板沟", "龙潭湾")


def name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def person(rng: random.Random, unit: str) -> dict[str, Any]:
    age = rng.choice((rng.randint(60, 95), rng.randint(60, 95), rng.randint(3, 16), rng.randint(20, 59)))
    born = dt.date(2026 - age, rng.randint(1, 12), rng.randint(1, 28))
    groups = []
    if age >= 60:
        groups.append("老年人")
        if rng.random() < 0.3:
            groups.append("独居")
    elif age < 18:
        groups.append("儿童")
        if rng.random() < 0.3:
            groups.append("留守")
    if rng.random() < 0.15:
        groups.append("困难群众")
    if rng.random() < 0.1:
        groups.append("残疾人")
    gender = rng.choice(("男", "女"))
    # a sequence number whose last digit is odd for a man and even for a woman, then the check digit
    first17 = f"{unit[:6]}{born:%Y%m%d}{rng.randint(50, 499) * 2 + (gender == '男')}"
    id_number = first17 + checks.id_check_digit(first17)
    return {
        "unit": unit,
        "name": name(rng),
        "gender": gender,
        "birth_date": born.isoformat(),
        "id_number": id_number,
        "phone": f"1{rng.choice('3589')}{rng.randint(0, 999999999):09d}",
        "address": f"{rng.choice(STREETS)}{rng.randint(1, 200)}号",
        "groups": groups,
    }


def need(rng: random.Random, unit: str, person_id: str) -> dict[str, Any]:
    cat = rng.choice(CATEGORIES)
    return {
        "unit": unit,
        "person": person_id,
        "category": cat,
        "description": f"{cat}：{rng.choice(('需要上门探访', '申请临时救助', '需要助餐服务', '协助就医', '课业辅导'))}",
        "urgency": rng.choice(URGENCIES),
        "status": "待处理",
    }


def service(rng: random.Random, unit: str, person_id: str, need_id: str | None, category: str) -> dict[str, Any]:
    day = dt.datetime(2026, rng.randint(1, 11), rng.randint(1, 28), rng.randint(8, 17), rng.choice((0, 30)))
    out: dict[str, Any] = {
        "unit": unit,
        "person": person_id,
        "service_type": category,
        "provider_kind": rng.choice(PROVIDER_KINDS),
        "served_at": day.strftime("%Y-%m-%dT%H:%M"),
        "minutes": rng.choice((15, 30, 45, 60, 90)),
        "people_served": 1,
    }
    if need_id:
        out["need"] = need_id
    return out
