"""Errors a channel provider raises: transient ones are retried, permanent ones are not."""

from __future__ import annotations

from app.masking import mask_text


class ChannelError(Exception):
    """``detail`` is the provider's text, masked (phone numbers, emails and openids): it goes
    on the message's timeline and into logs, and an erasure cannot reach a timeline written
    after it (a send in flight when the customer is erased)."""

    transient = False

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        masked = mask_text(detail)
        super().__init__(masked)
        self.detail = masked
        self.code = code


class TransientChannelError(ChannelError):
    """Try again later (timeouts, 5xx, provider rate limits)."""

    transient = True


class PermanentChannelError(ChannelError):
    """Retrying cannot help (bad number, unsubscribed, rejected content): fall back instead."""


class ProviderFault(PermanentChannelError):
    """Permanent for this provider account but not about the recipient (rejected
    credentials, no approved template there): the next account of the channel is tried
    before falling back to the next channel."""


class ContentRefused(ProviderFault):
    """This account does not carry this content (its signature or template is not approved
    here): the next account is tried, but the account still serves other content, so the
    refusal does not count against its circuit (one scenario's unapproved template would
    otherwise take the account from every other, account notices included)."""


class RecipientUnreachable(PermanentChannelError):
    """The customer has no usable contact point on this channel."""


class ProviderConfigError(Exception):
    """A provider is misconfigured; raised at start so the platform fails fast."""


class CallbackAuthError(Exception):
    """A callback failed the provider's authentication (bad signature or token): 401."""


class CallbackRejected(Exception):
    """A callback body the provider would never send (malformed): 400."""


class CallbackNotSupported(Exception):
    """The provider takes no callbacks: 404."""
