"""Videos: a known container, a bounded size, and the frame count and rate they really have."""

from __future__ import annotations

from nimctl.media.formats import VideoInfo, probe_video

# Leading bytes of the containers OpenCV's FFmpeg backend reads.
_CONTAINERS = (
    (4, b"ftyp", "MP4/MOV/3GP"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"FLV", "FLV"),
)


class VideoProblem(Exception):
    def __init__(self, reason: str, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.reason = reason
        self.problem = problem
        self.fix = fix


def container_of(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "AVI"
    for offset, magic, name in _CONTAINERS:
        if data[offset : offset + len(magic)] == magic:
            return name
    return None


def inspect_video(data: bytes) -> VideoInfo:
    if container_of(data) is None:
        raise VideoProblem(
            "not_a_video",
            "The data is not a video container nimctl reads.",
            "Send MP4, MOV, MKV, WebM, AVI or FLV.",
        )
    info = probe_video(data)
    if info is None:
        raise VideoProblem(
            "corrupt",
            "The video cannot be decoded (unknown codec or damaged).",
            "Send an H.264 or MPEG-4 video in a complete file.",
        )
    return info
