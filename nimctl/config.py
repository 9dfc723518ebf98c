"""The effective configuration: CLI flags, `NIM_*` variables, the profile and the defaults,
validated once into one immutable object.

`serve`, `check`, `show-profile`, `list-profiles` and `k8s` all start here, so a value that stops
one stops all of them with the same message (`nimctl k8s` builds its settings from the values
file's `env:` with `settings_for_pod`, as each pod will).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nimctl.errors import ConfigError
from nimctl.profiles import Gpu, Profile, ProfileStore, apply_settings, fit, load_store
from nimctl.settings import NimSettings


@dataclass(frozen=True)
class EffectiveConfig:
    settings: NimSettings
    store: ProfileStore
    written: Profile  # the selected profile as its YAML says
    profile: Profile  # as it will run: settings applied

    @property
    def profile_id(self) -> str:
        return self.store.id_of(self.written)


def effective_config(
    settings: NimSettings,
    *,
    name: str | None = None,
    gpus: Sequence[Gpu] | None = None,
) -> EffectiveConfig:
    """`name`: that profile (show-profile, k8s); otherwise NIM_MODEL_PROFILE, or the choice for
    `gpus`. With `gpus` (serve, check), the profile must also fit them."""
    store = load_store(settings)
    written = (
        store.get(name) if name is not None else store.select(settings.model_profile, gpus or [])
    )
    profile = apply_settings(written, settings)
    if gpus is not None:
        verdict = fit(profile, gpus)
        if not verdict.ok:
            # As NIM's list-model-profiles does: say what would run here instead.
            fitting = [p.name for p in store if fit(p, gpus).ok and (p.hardware.gpus or not gpus)]
            raise ConfigError(
                f"profile {profile.name} cannot run on this machine: {verdict.reason}; profiles "
                f"that fit: {', '.join(sorted(fitting)) or 'none'} (see `nimctl list-profiles`)"
            )
    return EffectiveConfig(settings, store, written, profile)
