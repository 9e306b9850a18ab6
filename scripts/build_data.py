"""Rebuild the files in data/ from sources that install offline, and refresh data/MANIFEST.json.

Run from the repository root:  python scripts/build_data.py
It needs `praat-parselmouth` (pip install praat-parselmouth); learners never run it, since the
built files are committed and shipped inside the package as ``adaedu._data``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"

SOURCES = {
    "peterson_barney_1952.csv": {
        "title": "Peterson & Barney (1952) vowel formant measurements",
        "rows": 1520,
        "columns": ["type", "sex", "speaker", "vowel", "ipa", "f0", "f1", "f2", "f3"],
        "provenance": (
            "G. E. Peterson and H. L. Barney (1952), 'Control methods used in a study of the "
            "vowels', J. Acoust. Soc. Am. 24(2):175-184, https://doi.org/10.1121/1.1906875. "
            "76 speakers (33 men, 28 women, 15 children) x 10 vowels x 2 repetitions; F0-F3 in Hz. "
            "Extracted from the copy that Praat ships, through praat-parselmouth "
            "(call('Create formant table (Peterson & Barney 1952)')) by scripts/build_data.py."
        ),
        "licence": (
            "Factual measurements published in 1952; the digital table is distributed with Praat "
            "(Boersma & Weenink), GPL-3.0-or-later. Cite Peterson & Barney (1952) when you use it."
        ),
    },
}


def build_peterson_barney(path: Path) -> None:
    from parselmouth.praat import call  # only needed here, never at run time

    table = call("Create formant table (Peterson & Barney 1952)")
    n_rows = int(call(table, "Get number of rows"))
    labels = ["Type", "Sex", "Speaker", "Vowel", "IPA", "F0", "F1", "F2", "F3"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(SOURCES[path.name]["columns"])
        for row in range(1, n_rows + 1):
            values = []
            for label in labels:
                if label in ("Type", "Sex", "Vowel", "IPA"):
                    values.append(call(table, "Get value", row, label))
                else:
                    values.append(int(round(float(call(table, "Get value", row, label)))))
            writer.writerow(values)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    build_peterson_barney(DATA / "peterson_barney_1952.csv")
    manifest = {}
    for name, meta in SOURCES.items():
        manifest[name] = {**meta, "sha256": sha256(DATA / name)}
    (DATA / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v["sha256"] for k, v in manifest.items()}, indent=2))


if __name__ == "__main__":
    main()
