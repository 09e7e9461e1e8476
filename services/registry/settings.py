"""Registry settings, from `BANGFU_REGISTRY_*` variables."""

from pathlib import Path
from typing import ClassVar

from pydantic import Field, IPvAnyNetwork
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    service: ClassVar[str] = "registry"
    model_config = SettingsConfigDict(env_prefix="BANGFU_REGISTRY_", extra="ignore")

    # 公示 period in days by region prefix (JSON, e.g. {"": 7, "4113": 5}); "" is the default.
    notice_days: dict[str, int] = {"": 7}

    # -- the DCI social registry API (services/registry/dci, docs/dci.md) --
    # Our sender_id in DCI headers and signature keyIds.
    dci_sender_id: str = "bangfu-registry"
    # Our ed25519 signing key (PEM, created when missing); unset: `<home>/dci_ed25519.pem`.
    dci_signer_pem: Path | None = None
    # Senders' ed25519 public keys by sender_id (base64 of the 32 raw bytes, or PEM), JSON.
    dci_trusted_senders: dict[str, str] = {}
    # Refuse senders without a registered key (err.signature.invalid); off only for trials.
    dci_require_signatures: bool = True
    # Networks besides the public internet that callbacks and notifications may go to.
    dci_callback_allowed_networks: list[IPvAnyNetwork] = []
    dci_delivery_max_attempts: int = Field(default=8, ge=1)
    dci_delivery_backoff_base_seconds: float = Field(default=2.0, gt=0)
    dci_delivery_backoff_cap_seconds: float = Field(default=600.0, gt=0)
    dci_delivery_poll_seconds: float = Field(default=1.0, gt=0)
    dci_delivery_timeout_seconds: float = Field(default=10.0, gt=0)

    @property
    def dci_signer_pem_path(self) -> Path:
        return self.dci_signer_pem or self.suite.home / "dci_ed25519.pem"
