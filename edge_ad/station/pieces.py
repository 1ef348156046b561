"""The pieces a running station is made of, in one place: the loop wires them, triggered mode (edge_ad.station.line)
and the OPC UA server (edge_ad.station.opcua) read them, and none of those three imports another for its types."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge_ad.station.alarms import Alarms
from edge_ad.station.camera import Camera
from edge_ad.station.config import StationConfig
from edge_ad.station.evidence import EvidenceStore
from edge_ad.station.faults import Faults
from edge_ad.station.framelog import FrameLog
from edge_ad.station.gpio_input import InputBackend
from edge_ad.station.model import ModelSlot
from edge_ad.station.service import Notifier
from edge_ad.station.status import StationStatus
from edge_ad.station.trigger import Encoder, TriggerQueue

if TYPE_CHECKING:
    from edge_ad.station.reject import Rejector  # imported where a rejector is built (GPIO backends load lazily)

log = logging.getLogger(__name__)


@dataclass
class Line:
    """Triggered mode's pieces, closed in reverse order by close()."""

    queue: TriggerQueue
    trigger_input: InputBackend | None = None  # gpio trigger line (a FakeInput in tests)
    encoder: Encoder | None = None
    rejector: Rejector | None = None
    sources: list = field(default_factory=list)

    def close(self) -> None:
        for source in reversed(self.sources):
            try:
                source.close()
            except Exception:  # noqa: BLE001 - closing one input must not keep the others open
                log.exception("closing %s failed", type(source).__name__)
        if self.rejector is not None:
            self.rejector.close()


@dataclass
class Station:
    """The pieces the loop drives (built once; `cfg` changes on a reload)."""

    cfg: StationConfig
    status: StationStatus
    notifier: Notifier
    camera: Camera
    alarms: Alarms
    faults: Faults
    model: ModelSlot
    store: EvidenceStore
    frame_log: FrameLog
    line: Line | None = None  # triggered mode's triggers, encoder and rejector (None: continuous mode)
    web_url: str = ""  # the web view's address once it serves ("" when off)
