"""Import every model so that Base.metadata is complete (Alembic, tests)."""

from app.auth.models import ApiKey
from app.customers.models import Customer, CustomerAttribute, CustomerConsent
from app.db import Base
from app.messages.models import InboundMessage, Message, MessageEvent, Outbox
from app.sandbox.models import SandboxDelivery
from app.scenarios.models import Scenario
from app.strategies.models import Segment, Strategy
from templates.models import Template, TemplateVersion

__all__ = [
    "ApiKey",
    "Base",
    "Customer",
    "CustomerAttribute",
    "CustomerConsent",
    "InboundMessage",
    "Message",
    "MessageEvent",
    "Outbox",
    "SandboxDelivery",
    "Scenario",
    "Segment",
    "Strategy",
    "Template",
    "TemplateVersion",
]
