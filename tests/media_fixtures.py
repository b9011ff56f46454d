"""Media files as people have them, made by the tests themselves (PyAV, Pillow, soundfile):
a phone's portrait clip (stored landscape with a display matrix), a variable-frame-rate
clip, PNG/JPEG/WebP stills (and a JPEG turned by its EXIF orientation), a WAV cut off
mid-data, a clip whose audio ends before its video, a file name that is not UTF-8, and
files whose headers announce frames far too large to decode."""

from __future__ import annotations

import os
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np

RATE = 16000


def face(seed: int = 0, size=(120, 160)) -> np.ndarray:
    """A synthetic face (training.synthetic's drawing) at `size` (H, W)."""
    from PIL import Image

    from training.synthetic import make_clip

    _, frames, _ = make_clip(seed, code="hap", seconds=1.0, frames=1)
    return np.asarray(Image.fromarray(frames[0]).resize((size[1], size[0])))


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    from training.synthetic import make_clip

    audio, _, _ = make_clip(seed, code="hap", seconds=seconds, frames=1)
    return audio.astype(np.float32)


def write_video(path, frames, times, audio=None, rate: int = RATE, rotation: int = 0, codec: str = "mpeg4",
                fmt: str | None = None) -> Path:
    """Frames (uint8 [H, W, 3] each) at `times` (seconds; any spacing: variable frame rates),
    an optional mono AAC track, and a display matrix turning the picture `rotation` degrees
    clockwise for display (what a phone writes for a portrait clip)."""
    import av

    path = Path(path)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream(codec, rate=max(1, int(round(len(times) / max(times[-1], 1e-3)))))
        video.width, video.height, video.pix_fmt = w, h, "yuv420p" if codec != "mjpeg" else "yuvj420p"
        video.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            video.set_display_rotation(-rotation)  # PyAV takes counter-clockwise degrees
        track = out.add_stream("aac", rate=rate, layout="mono") if audio is not None else None
        for frame, t in zip(frames, times):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts, vf.time_base = int(round(t * 1000)), Fraction(1, 1000)
            out.mux(video.encode(vf))
        out.mux(video.encode())
        if track is not None:
            for start in range(0, len(audio), 1024):
                af = av.AudioFrame.from_ndarray(audio[None, start:start + 1024].astype(np.float32), format="fltp",
                                                layout="mono")
                af.sample_rate, af.pts = rate, start
                out.mux(track.encode(af))
            out.mux(track.encode())
    return path


def marked(size=(120, 160), seed: int = 0) -> np.ndarray:
    """A face with a red block in its top-left corner (to see which way a frame is turned)."""
    frame = face(seed, size).copy()
    frame[: size[0] // 4, : size[1] // 4] = (255, 0, 0)
    return frame


def phone_clip(path, seconds: float = 2.0, fps: int = 15) -> Path:
    """A portrait phone clip: stored 160x90 landscape, displayed 90x160 (turned 90 degrees
    clockwise by its display matrix), red block top-left as stored, with speech."""
    n = int(seconds * fps)
    frame = marked((90, 160))
    return write_video(path, [frame] * n, [i / fps for i in range(n)], audio=speech(seconds), rotation=90)


def vfr_clip(path) -> tuple[Path, list[float]]:
    """6 s: 5 fps for the first 3 s, then 30 fps. Each frame's brightness is 40 x its time in
    seconds (0..240), so a frame tells when it was shown. -> (path, times)."""
    times = [i / 5 for i in range(15)] + [3 + i / 30 for i in range(90)]
    frames = [np.full((96, 128, 3), int(40 * t), np.uint8) for t in times]
    return write_video(path, frames, times), times


def short_audio_clip(path, seconds: float = 4.0, audio_seconds: float = 1.5, fps: int = 15) -> Path:
    """A clip whose audio track ends (audio_seconds) well before its video (seconds)."""
    n = int(seconds * fps)
    return write_video(path, [face(i % 3) for i in range(n)], [i / fps for i in range(n)],
                       audio=speech(audio_seconds))


def stills(folder) -> dict[str, Path]:
    """The same face as PNG, JPEG, WebP and BMP, and a JPEG stored sideways with EXIF
    orientation 6 (turn 90 degrees clockwise to show)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(marked((120, 160)))
    out = {}
    for ext in ("png", "jpg", "webp", "bmp"):
        out[ext] = folder / f"face.{ext}"
        img.save(out[ext])
    exif = Image.Exif()
    exif[0x0112] = 6
    out["exif"] = folder / "sideways.jpg"
    img.save(out["exif"], exif=exif)
    return out


def write_wav(path, seconds: float = 2.0, seed: int = 0) -> Path:
    import soundfile as sf

    sf.write(os.fsencode(path), speech(seconds, seed), RATE, subtype="PCM_16")  # bytes: any name
    return Path(path)


def truncated_wav(path, seconds: float = 2.0, keep: float = 0.5) -> Path:
    """A WAV cut off mid-data (a recorder that died, a copy that stopped): its header still
    says `seconds`, the file holds `keep` of them."""
    write_wav(path, seconds)
    data = Path(path).read_bytes()
    cut = 44 + int(len(data[44:]) * keep) // 2 * 2
    Path(path).write_bytes(data[:cut])
    return Path(path)


def non_utf8_name(folder, stem: bytes = b"caf\xe9-\xff", suffix: str = ".wav") -> Path:
    """A path whose name is not UTF-8 (Latin-1 bytes, as an old camera or a Windows share
    writes them), as Python sees it: os.fsdecode, each stray byte a lone surrogate."""
    return Path(folder) / os.fsdecode(stem + suffix.encode())


def huge_png(path, width: int = 16000, height: int = 16000) -> Path:
    """A small PNG whose header announces width x height (the CRC fixed, so readers believe it)."""
    from PIL import Image

    Image.new("RGB", (16, 16), (90, 90, 90)).save(path)
    data = bytearray(Path(path).read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])) & 0xFFFFFFFF)
    Path(path).write_bytes(bytes(data))
    return Path(path)


def huge_mjpeg(path, width: int = 16000, height: int = 16000) -> Path:
    """An MJPEG AVI whose stream header and frames announce width x height, each frame a few
    hundred bytes (a small JPEG with its size fields rewritten): decoding one would take GBs."""
    import io

    import av
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buffer, "JPEG")
    jpeg = bytearray(buffer.getvalue())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for i in range(5):
            packet = av.Packet(bytes(jpeg))
            packet.stream, packet.pts, packet.dts = stream, i, i
            packet.time_base = Fraction(1, 10)
            packet.is_keyframe = True
            out.mux(packet)
    return Path(path)
