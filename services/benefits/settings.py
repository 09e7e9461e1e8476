"""Benefits settings, from `BANGFU_BENEFITS_*` variables."""

from pathlib import Path
from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from services.benefits.domain.parameters import DEFAULT_DIRECTORY
from shared.registry_client import BATCH_READ_MAX
from shared.settings import ServiceSettings


class BenefitsSettings(ServiceSettings):
    service: ClassVar[str] = "benefits"
    calls_registry: ClassVar[bool] = True
    model_config = SettingsConfigDict(env_prefix="BANGFU_BENEFITS_", extra="ignore")

    # The YAML parameter files (one per region); checked when the app is built.
    parameters_dir: Path = DEFAULT_DIRECTORY
    # Fetch a household's inputs from the registry when its events arrive.
    follow_registry: bool = True
    # Read the files of a fetched batch of household events in one registry call. False reads
    # each on its own (two calls per event, the way before the batch read): for a registry
    # without `POST /v1/households:batch-get` during an upgrade, and the catch-up bench's
    # baseline.
    registry_batch_reads: bool = True
    # A fetch of household events as large as one batch read of the registry
    # (`BATCH_READ_MAX`): a catch-up's cost per batch (a read, a commit) is paid half as often.
    consumer_batch_size: int = BATCH_READ_MAX
