"""What the media intake did for one request: per item, when it fetched and decoded, and how big.

The intake only takes timestamps and sizes (a few clock reads per item); what to make of them
(histograms, trace spans) is decided by whoever reads the report, so the intake knows neither
Prometheus nor OpenTelemetry. Times are wall-clock nanoseconds because trace spans need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MediaItemReport:
    where: str  # the content part, as refusals name it (`messages[0].content[1]`)
    kind: str  # "image" or "video"
    fetched: bool  # True: bytes came from a URL; False: from a data: URL
    fetch_start_ns: int = 0
    fetch_end_ns: int = 0  # equal to the start for a data: URL (nothing fetched)
    decode_start_ns: int = 0
    decode_end_ns: int = 0  # base64 and image decoding or video probing, on a worker thread
    bytes: int = 0
    pixels: int = 0  # images: width x height
    frames: int = 0  # videos: frames in the file

    @property
    def fetch_seconds(self) -> float:
        return (self.fetch_end_ns - self.fetch_start_ns) / 1e9

    @property
    def decode_seconds(self) -> float:
        return (self.decode_end_ns - self.decode_start_ns) / 1e9


@dataclass
class MediaReport:
    items: list[MediaItemReport] = field(default_factory=list)
