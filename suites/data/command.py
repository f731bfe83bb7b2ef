"""`bnparity data`: find the Fashion-MNIST files, verify them and count the images per split and class."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .fashion_mnist import (
    CLASS_NAMES,
    FILES,
    find_file,
    load_fashion_mnist,
    locate_or_download,
    search_locations,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `data` options to `parser`."""
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the 4 IDX files (.gz or raw); default: $BNPARITY_DATA, then "
                             "the user cache, then /usr/share/datasets/fashion-mnist")
    parser.add_argument("--download", action="store_true",
                        help="download from the official mirror when not found (into --data-dir or "
                             "$BNPARITY_DATA when given, else the user cache)")
    parser.add_argument("--recheck", action="store_true",
                        help="hash the files again even when they were verified before")


def run(args: argparse.Namespace) -> int:
    """Locate (optionally download), verify and summarize the data; 0 on success.

    Raises:
        UserError: not found, or a corrupt or mismatching file (the CLI prints it and exits 2).
    """
    downloaded: list[str] = []

    def log(line: str) -> None:
        downloaded.append(line)
        print(line, file=sys.stderr, flush=True)

    folder = locate_or_download(args.data_dir, allow_download=args.download, log=log)
    origin = dict(search_locations(args.data_dir)).get(folder, "")
    print(f"found: {folder} ({origin}{', downloaded now' if downloaded else ''})")
    start = time.perf_counter()
    ds = load_fashion_mnist(folder, verify=True, recheck=args.recheck)
    seconds = time.perf_counter() - start
    for spec in FILES.values():
        print(f"  {find_file(folder, spec).name}")
    print(f"verified: size and sha256 of the uncompressed contents of the 4 files match the official "
          f"release ({seconds:.2f} s{', rechecked' if args.recheck else ''})")
    size = "x".join(map(str, ds.train_images.shape[1:]))
    print(f"train: {len(ds.train_images)} images {size}; test: {len(ds.test_images)} images")
    train_counts = np.bincount(ds.train_labels, minlength=len(CLASS_NAMES))
    test_counts = np.bincount(ds.test_labels, minlength=len(CLASS_NAMES))
    print(f"{'label':<6}{'class':<13}{'train':>7}{'test':>7}")
    for label, name in enumerate(CLASS_NAMES):
        print(f"{label:<6}{name:<13}{train_counts[label]:>7}{test_counts[label]:>7}")
    return 0
