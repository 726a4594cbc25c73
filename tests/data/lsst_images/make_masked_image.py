"""Write masked_image.fits with lsst.images (Python >= 3.12, bgdask[butler]).

    python tests/data/lsst_images/make_masked_image.py [OUT.fits]

The pixel values are a function of the pixel's position, so a reader can be
checked against them without lsst.images (tests/test_io_fits.py).
"""

import sys

import numpy as np
from lsst.images import Box, Image, Mask, MaskedImage, MaskPlane, MaskSchema
from lsst.images import fits as lsst_fits

X0, Y0, WIDTH, HEIGHT = 4200, -12, 40, 24


def expected_image(y, x):
    """Image value at array index (y, x): 10 * y + x / 8, exactly a float32."""
    return np.float32(10.0 * y + x / 8.0)


def masked_image() -> MaskedImage:
    # planes 0, 1, 2, 4 and 5 named; plane 3 unnamed (a reserved bit)
    schema = MaskSchema(
        [MaskPlane("BAD", "bad pixel"), MaskPlane("SAT", "saturated"), MaskPlane("EDGE", "edge"),
         None, MaskPlane("DETECTED", "detection footprint"), MaskPlane("NO_DATA", "no data")],
        dtype=np.uint8,
    )
    bbox = Box.factory[Y0:Y0 + HEIGHT, X0:X0 + WIDTH]
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = Image(expected_image(y, x).astype(np.float32), bbox=bbox)
    variance = Image(np.full((HEIGHT, WIDTH), 2.5, dtype=np.float32) + y.astype(np.float32), bbox=bbox)
    mask = Mask(schema=schema, bbox=bbox)
    mask.set("BAD", x == 3)                      # column 3
    mask.set("SAT", (y == 5) & (x >= 10))        # row 5 from column 10 on
    mask.set("EDGE", (y == 0) | (x == WIDTH - 1))
    mask.set("DETECTED", (y >= 8) & (y < 12) & (x >= 20) & (x < 26))
    mask.set("NO_DATA", y >= HEIGHT - 2)          # the last two rows
    return MaskedImage(image, mask=mask, variance=variance)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "masked_image.fits"
    lsst_fits.write(masked_image(), out)
    print(out)
