"""engine.utils.read_image: every image mode a dataset may hold becomes the 8-bit RGB image that
Pillow's ``convert("RGB")`` (torchvision's and Dassl's loader) gives for an 8-bit file, with
high-bit-depth grey rescaled instead of clipped. Every file here is written by Pillow."""
import numpy as np
import pytest
from PIL import Image

from engine.errors import DataError
from engine.utils import read_image


def ramp(high, dtype, shape=(16, 64)):
    """A grey ramp from 0 to ``high``, one value per pixel."""
    return np.linspace(0, high, num=shape[0] * shape[1]).reshape(shape).astype(dtype)


def assert_grey(img, expected):
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(arr[..., c], expected)


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_a_16_bit_grey_file_is_rescaled_not_clipped(tmp_path, fmt):
    values = ramp(65535, np.uint16)
    path = tmp_path / f"grey16.{fmt}"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I;16")  # what Pillow makes of it
    out = read_image(str(path))
    assert_grey(out, np.rint(values / 257.0).astype(np.uint8))
    # convert("RGB") alone clips: all but the darkest 256 of 65536 levels become 255
    assert len(np.unique(np.asarray(out))) > 200


def test_8_bit_values_stored_in_16_bits_read_back_exactly(tmp_path):
    eight = ramp(255, np.uint8)
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "x.png")
    assert_grey(read_image(str(tmp_path / "x.png")), eight)


def test_a_32_bit_integer_file_in_the_16_bit_range_is_read_as_16_bit(tmp_path):
    values = ramp(65535, np.int32)
    Image.fromarray(values).save(tmp_path / "i.tiff")
    with Image.open(tmp_path / "i.tiff") as img:
        assert img.mode == "I"
    assert_grey(read_image(str(tmp_path / "i.tiff")), np.rint(values / 257.0).astype(np.uint8))


def test_a_float_file_in_0_1_is_scaled_by_255(tmp_path):
    values = ramp(1.0, np.float32)
    Image.fromarray(values).save(tmp_path / "f.tiff")
    assert_grey(read_image(str(tmp_path / "f.tiff")), np.rint(values.astype(np.float64) * 255).astype(np.uint8))


@pytest.mark.parametrize("name, values, shown", [
    ("f.tiff", ramp(300.0, np.float32), "0..300"),
    ("i.tiff", ramp(100000, np.int32), "0..100000"),
    ("neg.tiff", ramp(1.0, np.float32) - 0.5, "-0.5..0.5"),
])
def test_an_ambiguous_high_bit_depth_range_is_one_sentence(tmp_path, name, values, shown):
    Image.fromarray(values).save(tmp_path / name)
    with pytest.raises(DataError, match=rf"Image .*{name} is .* grey \(mode [IF]\) with values {shown}, outside "
                                        r".*; convert it to an 8- or 16-bit file\."):
        read_image(str(tmp_path / name))


RGB = np.stack([ramp(255, np.uint8), ramp(255, np.uint8)[::-1], np.full((16, 64), 77, np.uint8)], axis=-1)


@pytest.mark.parametrize("mode, fmt", [("L", "png"), ("LA", "png"), ("RGBA", "png"), ("P", "png"),
                                       ("CMYK", "tiff"), ("1", "png"), ("RGB", "png")])
def test_8_bit_modes_read_as_pillow_converts_them(tmp_path, mode, fmt):
    img = Image.fromarray(RGB).convert(mode)
    path = tmp_path / f"x_{mode}.{fmt}"
    img.save(path)
    with Image.open(path) as reread:
        assert reread.mode == mode
        expected = np.asarray(reread.convert("RGB"))
    out = read_image(str(path))
    assert out.mode == "RGB" and out.size == (64, 16)
    np.testing.assert_array_equal(np.asarray(out), expected)
    if mode in ("RGB", "RGBA", "LA", "L"):  # lossless: the pixels themselves
        source = RGB if mode in ("RGB", "RGBA") else np.asarray(Image.fromarray(RGB).convert("L"))
        np.testing.assert_array_equal(np.asarray(out)[..., 0], source[..., 0] if source.ndim == 3 else source)


def test_a_palette_image_with_transparency_keeps_its_colours(tmp_path):
    img = Image.fromarray(RGB).convert("P")
    img.info["transparency"] = 0
    img.save(tmp_path / "t.png", transparency=0)
    with Image.open(tmp_path / "t.png") as reread:
        assert reread.mode == "P" and "transparency" in reread.info
        expected = np.asarray(reread.convert("RGBA"))[..., :3]
    np.testing.assert_array_equal(np.asarray(read_image(str(tmp_path / "t.png"))), expected)
