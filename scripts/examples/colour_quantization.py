"""Colour quantization: reduce a photograph to k colours with k-means on its pixels.

Use case
--------
Every pixel is a point in RGB space; k-means finds the k colours that best
represent the image (its palette), and replacing each pixel by its centre's
colour gives an image with at most k distinct colours (for GIF/PNG palettes,
posterisation, compression). As in scikit-learn's classic example, the model
is fitted on a random sample of pixels (float32 in [0, 1]) and ``predict``
then labels every pixel, here as a Dask array spread over the workers, so
the same code quantizes images (or image stacks) far larger than this one.

The image ships with scikit-image (``skimage.data.astronaut()``, 512 x 512;
``chelsea()``, 300 x 451, with ``--small``). The quantized PNG is written to
the output directory; the script prints the timings, the number of distinct
colours before and after, and the mean squared error against the original.

Run it
------
::

    pip install -e ".[examples]"     # scikit-image, for the photos
    python scripts/examples/colour_quantization.py                 # astronaut, k=16
    python scripts/examples/colour_quantization.py --small         # chelsea, a smaller sample
    python scripts/examples/colour_quantization.py -k 8 --image chelsea --output-dir out

A two-worker ``LocalCluster`` (``cluster_specs/local.yaml``) is started; its
dashboard link is printed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dask.array as da
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SPEC = ROOT / "cluster_specs" / "local.yaml"
IMAGES = ("astronaut", "chelsea")


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall-clock seconds of the block under ``name``."""
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Quantize a scikit-image sample image to k colours with kmeans_dask.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-k", "--n-colours", type=int, default=16, help="colours in the output")
    parser.add_argument(
        "--image", choices=IMAGES, default=None, help="default: astronaut (chelsea with --small)"
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=None,
        help="pixels to fit on (default: 50000; 5000 with --small)",
    )
    parser.add_argument("--small", action="store_true", help="smaller image and sample")
    parser.add_argument("--output-dir", type=Path, default=Path("example-output"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    return parser.parse_args(argv)


def load_image(name: str) -> np.ndarray:
    """A scikit-image sample image as float32 RGB in [0, 1], shape (height, width, 3)."""
    try:
        from skimage import data
    except ImportError as exc:
        raise SystemExit(
            "this example needs scikit-image: pip install 'kmeans_dask[examples]'"
        ) from exc
    image = getattr(data, name)()
    return (image[..., :3].astype(np.float32) / 255.0).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def distinct_colours(image_uint8: np.ndarray) -> int:
    return len(np.unique(image_uint8.reshape(-1, image_uint8.shape[-1]), axis=0))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from skimage.io import imsave
    except ImportError as exc:
        raise SystemExit(
            "this example needs scikit-image: pip install 'kmeans_dask[examples]'"
        ) from exc

    from kmeans_dask import KMeans
    from kmeans_dask.clusters import from_spec

    image_name = args.image or ("chelsea" if args.small else "astronaut")
    n_sample = args.sample or (5_000 if args.small else 50_000)
    k = args.n_colours
    args.output_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    with timed(timings, "data prep"):
        image = load_image(image_name)
        height, width, _ = image.shape
        pixels = image.reshape(-1, 3)
        rng = np.random.default_rng(args.seed)
        sample = pixels[rng.choice(len(pixels), min(n_sample, len(pixels)), replace=False)]
        # All pixels as a Dask array: predict labels them chunk by chunk on the workers.
        all_pixels = da.from_array(pixels, chunks=(65_536, 3))
    print(
        f"image: {image_name} {height} x {width} ({len(pixels):,} pixels, "
        f"{distinct_colours(to_uint8(image)):,} distinct colours); fitting k={k} on "
        f"{len(sample):,} sampled pixels"
    )

    started = time.perf_counter()
    with from_spec(LOCAL_SPEC, n_workers=args.workers, dashboard_address="127.0.0.1:0") as client:
        timings["cluster start"] = time.perf_counter() - started
        print(f"LocalCluster with {args.workers} workers; dashboard: {client.dashboard_link}")
        with timed(timings, "fit"):
            model = KMeans(n_clusters=k, random_state=args.seed).fit(sample)
        with timed(timings, "predict"):
            labels = model.predict(all_pixels).compute()

    palette = model.cluster_centers_.astype(np.float32)
    quantized = palette[labels].reshape(height, width, 3)
    quantized_uint8 = to_uint8(quantized)
    output = args.output_dir / f"{image_name}_k{k}.png"
    with timed(timings, "write PNG"):
        imsave(output, quantized_uint8, check_contrast=False)

    # The error of the image as written (8-bit colours) against the float original.
    mse = float(np.mean((quantized_uint8 / 255.0 - image.astype(np.float64)) ** 2))
    print("timings: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items()))
    print(f"fit: {model.n_iter_} Lloyd iterations, inertia {model.inertia_:.4f}")
    print(f"palette (RGB 0-255): {to_uint8(palette).tolist()}")
    print(f"distinct colours in the output: {distinct_colours(quantized_uint8)} (k={k})")
    print(f"mean squared error vs the original (RGB in [0, 1]): {mse:.6f}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
