"""Per-model request rules, applied before any token is computed.

`check_request` first applies the profile's request translations (which rewrite a request into
the form the model needs), then its guards (which refuse what the model cannot take). Every
refusal is a `GuardError`: a 400 naming the rule, the offending field or message, and the fix.
Guards are pure functions of the request body and the profile; they read a body that has not
been validated yet, so each one skips what is malformed and leaves that to vLLM's validation.
"""

from __future__ import annotations

from typing import Any

from nimctl.guards import media, params, roles, tools
from nimctl.guards.base import Content, GuardError, classify
from nimctl.profiles import Profile

__all__ = ["Content", "GuardError", "check_request"]


def check_request(payload: dict[str, Any], profile: Profile) -> Content:
    """Translate and check the request; its content parts, classified once, for the intake."""
    roles.check_shape(payload)
    media.translate(payload, profile)
    params.translate(payload, profile)
    tools.translate(payload)
    content = classify(payload)
    roles.check(payload, profile)
    params.check(payload, profile)
    tools.check(payload, profile)
    media.check(payload, profile, content)
    # Last, so that refusals (here and in the media intake) name parts where the client put
    # them: reordering moves the same part objects that `content` holds.
    media.reorder(payload, profile)
    return content
