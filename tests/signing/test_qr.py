"""The QR matrix: level Q, alphanumeric mode (the smallest alphanumeric version), and the
run decomposition drawn as vectors covers exactly the dark modules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import DCC


def _hc1s(limit: int = 12) -> list[str]:
    out = []
    for path in sorted(DCC.glob("testdata/*/2DCode/raw/*.json")):
        hc1 = json.loads(path.read_text()).get("PREFIX")
        if (
            isinstance(hc1, str)
            and hc1.startswith("HC1:")
            and set(hc1) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
        ):
            out.append(hc1)
    return out[:limit]


def test_version_is_the_alphanumeric_q_minimum() -> None:
    from signing.qr import min_version_alphanumeric_q, qr_matrix

    for hc1 in _hc1s():
        m = qr_matrix(hc1)
        assert m.size == 17 + 4 * m.version
        # byte mode would need more modules than alphanumeric for the same text
        assert m.version == min_version_alphanumeric_q(len(hc1))


def test_runs_cover_exactly_the_dark_modules() -> None:
    from signing.qr import qr_matrix

    m = qr_matrix(_hc1s(1)[0])
    canvas = np.zeros_like(m.modules)
    for row, col, n in m.runs():
        assert not canvas[row, col : col + n].any()
        canvas[row, col : col + n] = True
    assert (canvas == m.modules).all()


def test_matrix_decodes_with_zbar() -> None:
    from PIL import Image

    from signing.qr import decode_qr, qr_matrix

    hc1 = _hc1s(1)[0]
    m = qr_matrix(hc1)
    img = np.full((m.size + 8, m.size + 8), 255, np.uint8)
    img[4:-4, 4:-4] = np.where(m.modules, 0, 255)
    big = Image.fromarray(img).resize(((m.size + 8) * 4,) * 2, Image.NEAREST)
    assert decode_qr(big) == [hc1]


def test_rejects_non_alphanumeric_content() -> None:
    from signing.qr import QrContentError, qr_matrix

    with pytest.raises(QrContentError, match="alphanumeric"):
        qr_matrix("HC1:abc")


def qr_matrix_zxing(hc1: str):
    """The same matrix from zxing-cpp's encoder: the independent reference."""
    import zxingcpp

    from signing.qr import QrMatrix

    barcode = zxingcpp.create_barcode(hc1, zxingcpp.BarcodeFormat.QRCode, ec_level="Q")
    image = np.asarray(barcode.to_image(scale=1, add_quiet_zones=False))
    return QrMatrix(modules=image < 128)


@pytest.mark.parametrize("size", [21, 77, 99, 100, 177])
def test_rect_operators_are_the_runs(size: int) -> None:
    """The numpy-formatted operators say exactly what the runs say, for 1- to 3-digit
    module numbers (version 1 to 40)."""
    from signing.qr import QrMatrix

    rng = np.random.default_rng(size)
    m = QrMatrix(modules=rng.random((size, size)) < 0.5)
    text = m.rect_operators().decode("ascii")
    lines = text.splitlines()
    assert len(lines) == len(m.runs()) and text.endswith("\n")
    parsed = [tuple(int(t) for t in line.split()[:3]) for line in lines]
    assert parsed == [(col, row, n) for row, col, n in m.runs()]
    assert all(line.split()[3:] == ["1", "re"] for line in lines)


def test_two_independent_encoders_give_the_same_symbol() -> None:
    """libzint (used) and zxing-cpp (reference) pick the same version and mask by the ISO
    18004 rules: identical module matrices for the EU vectors and synthetic certificates."""
    from jobs.devtools.drill import drill_payload, unsigned_hc1
    from signing.qr import qr_matrix

    synthetic = [
        unsigned_hc1(drill_payload(i, f"URN:UVCI:01:SE:EHM/T{i:010d}"), 1767225600, 1798761600)
        for i in range(40)
    ]
    for hc1 in _hc1s(40) + synthetic:
        a, b = qr_matrix(hc1), qr_matrix_zxing(hc1)
        assert a.modules.shape == b.modules.shape
        assert (a.modules == b.modules).all()
