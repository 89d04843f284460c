"""FFHQ alignment from Haar eye centres vs dlib's 68 points, on the shipped test photos.

The reference eyes are the FFHQ script's: the mean of each eye's six dlib points. For each face
both backends find, it prints where those eyes land in each backend's 256 px FFHQ crop and how
far that is from where the FFHQ recipe puts them (the dlib crop, by construction); then each
backend's eye centres against the hand-marked ones (photo pixels, tests/data/photos/README.md;
mean of both eyes), and the detectors' time per photo (median of --repeats after a warm-up).

    python benchmarks/face_alignment.py [--size 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from src.faces import align_face, make_detector

PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"
ASTRONAUT_EYES = ((151.5, 75.4), (185.9, 77.3))
HOPPER_EYES = ((142.1, 121.0), (195.2, 120.3))
# two_faces.jpg: the astronaut at x = 0, Grace Hopper at x = 384, same scale.
MARKED = {
    "astronaut.jpg": [ASTRONAUT_EYES],
    "grace_hopper.jpg": [HOPPER_EYES],
    "two_faces.jpg": [ASTRONAUT_EYES, tuple((x + 384, y) for x, y in HOPPER_EYES)],
}


def marked_error(faces: list, marks: np.ndarray) -> float:
    """Mean distance of the nearest face's eye centres to the marked eyes (photo pixels)."""
    errors = []
    for face in faces:
        eyes = np.array([face.landmarks["left_eye"], face.landmarks["right_eye"]])
        errors.append(float(np.hypot(*(eyes - marks).T).mean()))
    return min(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    detectors = {name: make_detector(name) for name in ("haar", "dlib")}
    table = Table(title=f"eye error in the {args.size} px FFHQ crop (pixels, vs the dlib eyes)")
    for column in ("photo", "face", "haar left eye", "haar right eye"):
        table.add_column(column)
    marked = Table(title="eye centres vs the hand-marked eyes (photo pixels, mean of both)")
    for column in ("photo", "face", *detectors):
        marked.add_column(column)
    timing = Table(title="detection time per photo (ms)")
    for column in ("photo", *detectors):
        timing.add_column(column)
    for path in sorted(PHOTOS.glob("*.jpg")):
        photo = np.asarray(Image.open(path).convert("RGB"))
        found, millis = {}, {}
        for name, detector in detectors.items():
            found[name] = detector.detect(photo)
            runs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                detector.detect(photo)
                runs.append(1000 * (time.perf_counter() - start))
            millis[name] = statistics.median(runs)
        timing.add_row(path.name, *(f"{millis[name]:.0f}" for name in detectors))
        for index, reference in enumerate(found["dlib"]):
            eyes = np.array([reference.landmarks["left_eye"], reference.landmarks["right_eye"]])
            template = align_face(photo, reference, args.size).to_crop(eyes)
            centre = eyes.mean(axis=0)
            haar = min(
                found["haar"],
                key=lambda f: np.hypot(*(np.mean(list(f.landmarks.values()), axis=0) - centre)),
            )
            in_haar = align_face(photo, haar, args.size).to_crop(eyes)
            errors = np.hypot(*(in_haar - template).T)
            table.add_row(path.name, str(index), *(f"{e:.1f}" for e in errors))
        for index, marks in enumerate(MARKED.get(path.name, [])):
            row = (f"{marked_error(found[name], np.array(marks)):.1f}" for name in detectors)
            marked.add_row(path.name, str(index), *row)
    console = Console()
    console.print(table)
    console.print(marked)
    console.print(timing)


if __name__ == "__main__":
    main()
