"""The effective configuration: CLI flags, `NIM_*` variables, the profile and the defaults,
validated once into one immutable object.

`serve`, `check`, `show-profile`, `list-profiles` and `k8s` all start here, so a value that stops
one stops all of them with the same message. `nimctl k8s` also builds each pod's configuration
here (`pod_config`): the settings from the values file's `env:` alone, as the pod will read
them, and the profile with them applied. The manifests are rendered from that, never from the
`NIM_*` strings again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nimctl.errors import ConfigError
from nimctl.profiles import Gpu, Profile, ProfileStore, apply_settings, fit, load_store
from nimctl.settings import NimSettings, settings_for_pod


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


@dataclass(frozen=True)
class PodConfig:
    """What a pod rendered by `nimctl k8s` will run with."""

    settings: NimSettings  # from the pod's own `NIM_*` environment
    profile: Profile  # as it will run there: settings applied


def pod_config(written: Profile, env: Mapping[str, str]) -> PodConfig:
    """The configuration of a pod whose environment is `env` (its variables with a value),
    validated as `nimctl serve` will validate it in the pod, with the same messages."""
    settings = settings_for_pod(env)
    try:
        profile = apply_settings(written, settings)
    except ConfigError as exc:
        raise ConfigError(f"invalid values env: {exc}") from None
    return PodConfig(settings, profile)
