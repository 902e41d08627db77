"""Structural checks of a JPEG file of a WCPA folder, before and after decoding.

Every problem is a :class:`~pyfacepnp.data.wcpa.checks.WCPADataError` naming the file.

Before decoding (:func:`check_jpeg_structure`): start-of-image, every segment
inside the file, a frame header declaring at most :data:`~pyfacepnp.data.wcpa.checks.MAX_IMAGE_SIDE` px a side
and :data:`~pyfacepnp.data.wcpa.checks.MAX_IMAGE_PIXELS` pixels, entropy-coded data with only legal ``0xFF`` escapes,
restart markers in sequence and as many as the MCUs need, every coefficient brought to
its final pass by some scan, an end-of-image marker followed by nothing but zero padding.
After decoding (:func:`check_decoded_jpeg`): libjpeg fills what it has no data for with
luma 128, so a file cut short (even padded with an end marker) or whose corrupt data
stops the decoder early ends in flat grey, which is refused. Corruption that still
decodes to a complete picture (a flipped bit that keeps the decoder going) cannot be
told from a real image and is not detected.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pyfacepnp.data.wcpa.checks import WCPADataError, check_image_size

__all__ = ["GREY_FILL_PIXELS", "check_jpeg_structure", "check_decoded_jpeg"]

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_LOSSLESS = {0xC3, 0xC7, 0xCB, 0xCF}
GREY_FILL_PIXELS = 64


def check_jpeg_structure(path, data: bytes) -> tuple:
    """Walk the JPEG's markers (see the module docstring); returns the declared ``(height, width)``."""
    def bad(problem):
        return WCPADataError(path, f"JPEG is truncated or corrupt: {problem}")

    n = len(data)
    if data[:3] != b"\xff\xd8\xff":
        raise bad("no start-of-image marker")
    i, frame, restart, scans = 2, None, 0, 0
    while True:
        if i >= n:
            raise bad("the file ends before the end-of-image marker")
        if data[i] != 0xFF:
            raise bad(f"expected a marker at byte {i}, found 0x{data[i]:02x}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            raise bad("the file ends before the end-of-image marker")
        marker, at = data[i], i - 1
        i += 1
        if marker == 0xD9:
            break
        if marker == 0x01:  # TEM: no segment
            continue
        if marker < 0xC0 or marker == 0xD8 or 0xD0 <= marker <= 0xD7:  # reserved, SOI, RSTn
            raise bad(f"unexpected marker 0xFF{marker:02X} at byte {at}")
        length = int.from_bytes(data[i:i + 2], "big") if i + 2 <= n else 0
        if length < 2 or i + length > n:
            raise bad(f"segment 0xFF{marker:02X} at byte {at} runs past the end of the file")
        seg = data[i + 2:i + length]
        i += length
        if marker in _SOF:
            frame = _frame_header(bad, seg, marker)
            check_image_size(path, frame["height"], frame["width"])
        elif marker == 0xDD:
            if len(seg) != 2:
                raise bad("malformed restart-interval segment")
            restart = int.from_bytes(seg, "big")
        elif marker == 0xDA:
            if frame is None:
                raise bad("a scan starts before the frame header")
            scans += 1
            mcus = _scan(bad, seg, frame)
            i = _end_of_entropy_data(bad, data, i, restart, mcus if frame["marker"] in (0xC0, 0xC1, 0xC2) else 0)
    if frame is None or scans == 0:
        raise bad("no frame header or no scan before the end-of-image marker")
    if frame["marker"] not in _LOSSLESS:
        short = {c: 64 - len(k) for c, k in frame["final"].items() if len(k) < 64}
        if short:
            raise bad(f"the scans leave coefficients of component(s) {sorted(short)} without their final pass "
                      "(scans are missing)")
    if data[i:].strip(b"\x00"):
        raise bad(f"{n - i} bytes of data after the end-of-image marker")
    return frame["height"], frame["width"]


def _frame_header(bad, seg: bytes, marker: int) -> dict:
    if len(seg) < 6 or len(seg) != 6 + 3 * seg[5] or not 1 <= seg[5] <= 4:
        raise bad("malformed frame header")
    comps = {seg[6 + 3 * k]: (seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 15) for k in range(seg[5])}
    if any(not (1 <= h <= 4 and 1 <= v <= 4) for h, v in comps.values()):
        raise bad("frame header has invalid sampling factors")
    return {"marker": marker, "height": int.from_bytes(seg[1:3], "big"), "width": int.from_bytes(seg[3:5], "big"),
            "components": comps, "final": {c: set() for c in comps}}


def _scan(bad, seg: bytes, frame: dict) -> int:
    """Parse a scan header: record which coefficients reach their final pass (``Al = 0``)
    and return the number of MCUs the scan codes (what restart markers are counted against)."""
    comps = frame["components"]
    if not seg or len(seg) != 4 + 2 * seg[0] or not 1 <= seg[0] <= 4:
        raise bad("malformed scan header")
    ids = [seg[1 + 2 * k] for k in range(seg[0])]
    if any(c not in comps for c in ids):
        raise bad("scan names a component the frame does not have")
    ss, se, al = seg[-3], seg[-2], seg[-1] & 15
    if al == 0 and ss <= se <= 63:
        for c in ids:
            frame["final"][c].update(range(ss, se + 1))
    hmax = max(h for h, _ in comps.values())
    vmax = max(v for _, v in comps.values())
    w, h = frame["width"], frame["height"]
    if len(ids) > 1:
        return math.ceil(w / (8 * hmax)) * math.ceil(h / (8 * vmax))
    hc, vc = comps[ids[0]]
    return math.ceil(math.ceil(w * hc / hmax) / 8) * math.ceil(math.ceil(h * vc / vmax) / 8)


def _end_of_entropy_data(bad, data: bytes, i: int, restart: int, mcus: int) -> int:
    """Index of the marker that ends the entropy-coded data starting at ``i``."""
    n, rst = len(data), 0
    while True:
        k = data.find(b"\xff", i)
        if k < 0 or k + 1 >= n:
            raise bad("the scan's data runs to the end of the file (no end-of-image marker)")
        nxt = data[k + 1]
        if nxt == 0x00:  # stuffed 0xFF
            i = k + 2
        elif 0xD0 <= nxt <= 0xD7:
            if nxt - 0xD0 != rst % 8:
                raise bad(f"restart marker out of sequence at byte {k}")
            rst, i = rst + 1, k + 2
        elif nxt == 0xFF:  # fill byte before a marker
            i = k + 1
        else:
            if mcus and restart and rst != math.ceil(mcus / restart) - 1:
                raise bad(f"a scan of {mcus} MCUs with a restart interval of {restart} needs "
                          f"{math.ceil(mcus / restart) - 1} restart markers, found {rst}")
            return k


def check_decoded_jpeg(path, data: bytes) -> None:
    """Refuse a JPEG whose luma ends in libjpeg's fill for missing data: the last
    :data:`GREY_FILL_PIXELS` or more pixels of the last 8x8 block row (whole blocks, from
    the bottom-right corner) exactly 128."""
    y = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if y is None or y.size == 0:
        raise WCPADataError(path, "image cannot be decoded (corrupt or not an image)")
    h, w = y.shape
    rows = h - 8 * ((h - 1) // 8)
    x0 = 8 * ((w - 1) // 8)
    while x0 > 0 and rows * (w - x0) < GREY_FILL_PIXELS:
        x0 -= 8
    if bool((y[h - rows:, x0:] == 128).all()):
        raise WCPADataError(path, "JPEG is truncated or corrupt: the end of the picture decodes to the uniform "
                                  "grey (128) that the decoder fills missing data with")
