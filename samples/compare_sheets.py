"""Put the same frames of several models side by side: tiles cut from ``face_quality`` contact sheets.

    python samples/compare_sheets.py --out cmp.png \\
        base=runs/base/edtalk_pose_source2.new.png tuned=runs/tuned/edtalk_pose_source2.new.png --picks 2 5 7

Each sheet (``lipforce_sdk.face_quality`` / ``distill.realeval``'s ``*.png``, all of one clip and one
speech, so they show the same frames) gives its "out" tile of each pick (0-7, the sheet's order: left
to right, top to bottom); the first sheet also gives the input row. Written at half size (64 px per
128 px crop) with a label per row.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

# lipforce_sdk.face_quality._write_sheet's layout
TILE, STRIP, GAP, HEAD, COLS, SEP = 256, 18, 8, 26, 4, 4


def tile(sheet: np.ndarray, pick: int, out: bool) -> np.ndarray:
    r, c = divmod(pick, COLS)
    y = HEAD + r * (2 * (STRIP + TILE) + GAP) + int(out) * (STRIP + TILE) + STRIP
    x = c * (TILE + SEP)
    t = sheet[y:y + TILE, x:x + TILE]
    if t.shape[:2] != (TILE, TILE):
        raise ValueError(f"pick {pick} is outside the sheet ({sheet.shape[1]} x {sheet.shape[0]} px)")
    return t


def compare(sheets: list[tuple[str, np.ndarray]], picks: list[int], scale: float = 0.5) -> np.ndarray:
    rows = [("input", [tile(sheets[0][1], p, False) for p in picks])]
    rows += [(name, [tile(s, p, True) for p in picks]) for name, s in sheets]
    size, label = int(TILE * scale), 96
    img = np.full((len(rows) * (size + 2), label + len(picks) * (size + 2), 3), 32, np.uint8)
    for k, (name, tiles) in enumerate(rows):
        y = k * (size + 2)
        cv2.putText(img, name[:12], (4, y + size // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1,
                    cv2.LINE_AA)
        for j, t in enumerate(tiles):
            x = label + j * (size + 2)
            img[y:y + size, x:x + size] = cv2.resize(t, (size, size), interpolation=cv2.INTER_AREA)
    return img


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sheets", nargs="+", metavar="NAME=SHEET.png")
    ap.add_argument("--picks", type=int, nargs="+", default=list(range(8)), help="tiles 0-7 of each sheet")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    sheets = []
    for s in a.sheets:
        name, sep, path = s.partition("=")
        if not sep:
            ap.error(f"{s!r}: give NAME=SHEET.png")
        im = cv2.imread(path)
        if im is None:
            ap.error(f"could not read {path!r} as an image")
        sheets.append((name, im))
    try:
        img = compare(sheets, a.picks)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not cv2.imwrite(a.out, img):
        print(f"error: could not write {a.out!r}", file=sys.stderr)
        return 1
    print(f"{a.out}: {len(sheets) + 1} rows x {len(a.picks)} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
