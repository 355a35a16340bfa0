"""Payments' settings: its own read ``AGORA_PAYMENTS_*``, the shared ones ``AGORA_*``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from agora.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    service_name: ClassVar[str] = "payments"
    model_config = ServiceSettings.prefixed("AGORA_PAYMENTS_")

    # Seconds each call to the card processor may take; past it the call counts as a timeout.
    processor_timeout: float = Field(default=1.0, gt=0)
    # How long the simulated processor keeps a caller waiting on the timeout card (seconds);
    # unset: twice processor_timeout, so the caller's deadline always comes first.
    simulated_delay: float | None = Field(default=None, gt=0)
    # A worker holds an operation for processor_timeout plus this margin (seconds); a worker
    # that died holding one is replaced once it runs out.
    lease_margin: float = Field(default=5.0, gt=0)
    # How often the worker looks for operations when no commit woke it (seconds).
    worker_poll: float = Field(default=0.2, gt=0)
    # Operations the worker takes (and calls the processor for, concurrently) at a time.
    worker_batch: int = Field(default=20, ge=1, le=1000)

    @property
    def hang(self) -> float:
        return self.simulated_delay or 2 * self.processor_timeout
