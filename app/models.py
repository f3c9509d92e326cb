"""Import every model so that Base.metadata is complete (Alembic, tests)."""

from app.auth.models import ApiKey
from app.callbacks.models import EarlyReceipt
from app.campaigns.models import Campaign
from app.customers.models import Customer, CustomerAttribute, CustomerConsent
from app.db import Base
from app.experiments.models import Assignment, Experiment
from app.idempotency.models import IdempotentRequest
from app.messages.models import InboundCustomer, InboundMessage, Message, MessageEvent, Outbox
from app.sandbox.models import SandboxDelivery
from app.scenarios.models import Scenario
from app.strategies.models import Segment, Strategy
from app.tracking.models import Conversion, TrackedLink
from templates.models import Template, TemplateVersion

__all__ = [
    "ApiKey",
    "Assignment",
    "Base",
    "Campaign",
    "Conversion",
    "Customer",
    "CustomerAttribute",
    "CustomerConsent",
    "EarlyReceipt",
    "Experiment",
    "IdempotentRequest",
    "InboundCustomer",
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
    "TrackedLink",
]
