"""The A/B part of the demo: a patch experiment on the wealth strategy, and a marketing
scenario with a campaign experiment and a draft campaign, all through the services the API
uses. Each piece is created only when its key is missing, so a second run changes nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns import repository as campaigns_repository
from app.campaigns import service as campaigns
from app.campaigns.schemas import CampaignIn
from app.experiments import repository as experiments_repository
from app.experiments import service as experiments
from app.experiments.schemas import ExperimentIn
from app.scenarios import repository as scenarios_repository
from app.scenarios import service as scenarios
from app.scenarios.schemas import Channel, ScenarioCreate, TemplateIn
from templates import repository as templates_repository
from templates import service as templates
from templates.schemas import TemplateCreate

ALT_PATCH = ("wealth_patch_alt.sms", "新客专享理财年化3.5%，https://bank.example.com/w 了解详情")
CONVERSION_EVENT = "wealth_purchase"
PROMO_LINK = "https://bank.example.com/wealth/promo"

WEALTH_PROMO: dict[str, Any] = {
    "key": "wealth_promo",
    "name": "Wealth product promotion",
    "class": "marketing",
    "channels": ["sms", "email"],
    "required_variables": [{"name": "product", "type": "string"}],
    "templates": {
        "sms": {"body": f"【示例银行】{{{{ product }}}}今日发售，起购1万元，详情 {PROMO_LINK}"},
        "email": {
            "subject": "{{ product }}今日发售",
            "body": f"您好，{{{{ product }}}}今日发售，起购1万元。详情：{PROMO_LINK}",
            "html": f"<p>您好，{{{{ product }}}}今日发售，起购1万元。</p>"
            f'<p><a href="{PROMO_LINK}">了解详情</a></p>',
        },
    },
}

# the account-movement stream of high-net-worth customers: 10% get no patch, the rest the
# current wealth patch or the alternative one (with a tracked link)
PATCH_EXPERIMENT: dict[str, Any] = {
    "key": "wealth_patch_ab",
    "name": "Wealth patch: current copy or the alternative with a link",
    "kind": "patch",
    "segment": "high_net_worth",
    "strategy": "wealth_offer",
    "variants": [
        {"key": "holdout", "weight": 10, "holdout": True},
        {"key": "current", "weight": 45, "channel": "sms", "template": "wealth_patch.sms"},
        {"key": "alt", "weight": 45, "channel": "sms", "template": ALT_PATCH[0]},
    ],
    "metric": "clicked",
    "conversion_event": CONVERSION_EVENT,
    "min_sample": 10,
}

# the wealth promotion to high-net-worth customers: SMS or email, and a 10% holdout
CAMPAIGN_EXPERIMENT: dict[str, Any] = {
    "key": "wealth_promo_channel",
    "name": "Wealth promotion: SMS or email",
    "kind": "campaign",
    "segment": "high_net_worth",
    "variants": [
        {"key": "holdout", "weight": 10, "holdout": True},
        {"key": "sms", "weight": 45, "channel": "sms", "template": "wealth_promo.sms"},
        {"key": "email", "weight": 45, "channel": "email", "template": "wealth_promo.email"},
    ],
    "metric": "converted",
    "conversion_event": CONVERSION_EVENT,
    "min_sample": 10,
}

CAMPAIGN: dict[str, Any] = {
    "key": "wealth_promo_launch",
    "name": "稳健理财30天 launch",
    "scenario": "wealth_promo",
    "segment": "high_net_worth",
    "experiment": "wealth_promo_channel",
    "variables": {"product": "稳健理财30天"},
    "rate_per_second": 10,
}


async def seed(session: AsyncSession) -> None:
    """The experiments (running) and the campaign (a draft, started by the user)."""
    key, body = ALT_PATCH
    if await templates_repository.by_key(session, key) is None:
        content = TemplateIn(body=body)
        await templates.create(
            session, TemplateCreate(key=key, channel=Channel.sms, content=content)
        )
        await templates.publish(session, key, 1)
    if await scenarios_repository.by_key(session, WEALTH_PROMO["key"]) is None:
        await scenarios.create(session, ScenarioCreate.model_validate(WEALTH_PROMO))
    for spec in (PATCH_EXPERIMENT, CAMPAIGN_EXPERIMENT):
        await _running_experiment(session, spec)
    if await campaigns_repository.by_key(session, CAMPAIGN["key"]) is None:
        await campaigns.create(session, CampaignIn.model_validate(CAMPAIGN))


async def _running_experiment(session: AsyncSession, spec: dict[str, Any]) -> None:
    """Create and start the experiment, unless it exists (whatever its status now)."""
    if await experiments_repository.by_key(session, spec["key"]) is not None:
        return
    row = await experiments.create(session, ExperimentIn.model_validate(spec))
    await experiments.start(session, row.key)
