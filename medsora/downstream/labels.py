"""The labelled and unlabeled video lists of the downstream test.

A labels CSV holds one `path,label` per line (an optional `path,label` header, blank lines and `#` comments are
skipped); a path is a video file or a frame folder, relative to the CSV's own folder unless absolute:

    read_labels("train/labels.csv")      -> [Labelled(path, label, line), ...]   every path checked to exist
    class_names(train, "train.csv")      -> sorted label names (at least two)
    encode(test, classes, "test.csv")    -> class indices (a label unknown to training is an error)
    list_unlabeled("samples/")           -> the videos / frame folders of a folder (not empty)

Every problem is a `LabelsError` naming the CSV, its line and the path, in one line.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..data.index import find_sources
from ..errors import MedsoraError


class LabelsError(MedsoraError, ValueError):
    """A labels CSV or an unlabeled folder that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Labelled:
    path: Path    # absolute (resolved against the CSV's folder)
    label: str
    line: int     # 1-based line of the CSV, for messages


def _rows(csv_path: Path):
    """(line number, [fields]) of the data lines of a CSV: blank lines, `#` comments and the header left out."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(f"cannot read the labels CSV {csv_path}: {e}") from None
    for n, fields in enumerate(csv.reader(text.splitlines()), start=1):
        fields = [f.strip() for f in fields]
        if not fields or not any(fields) or fields[0].startswith("#"):
            continue
        if n == 1 and [f.lower() for f in fields] == ["path", "label"]:
            continue
        yield n, fields


def read_labels(csv_path: str | Path) -> list[Labelled]:
    """The (path, label) rows of a labels CSV, each path checked to exist."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise LabelsError(f"labels CSV {csv_path} does not exist")
    out = []
    for n, fields in _rows(csv_path):
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise LabelsError(f"{csv_path} line {n}: expected 'path,label', got {','.join(fields)!r}")
        path = Path(fields[0]) if Path(fields[0]).is_absolute() else csv_path.parent / fields[0]
        if not path.exists():
            raise LabelsError(f"{csv_path} line {n}: {fields[0]} does not exist (looked for {path}; relative "
                              "paths are read from the CSV's folder)")
        out.append(Labelled(path, fields[1], n))
    if not out:
        raise LabelsError(f"{csv_path} lists no videos (expected lines of 'path,label')")
    return out


def class_names(train: list[Labelled], csv_path: str | Path) -> list[str]:
    """The sorted label names of the training set; a classifier needs at least two."""
    names = sorted({item.label for item in train})
    if len(names) < 2:
        raise LabelsError(f"{csv_path}: every training video is labelled {names[0]!r}; a classifier needs at "
                          "least two classes")
    return names


def encode(items: list[Labelled], classes: list[str], csv_path: str | Path) -> list[int]:
    """Class index of each item; a label the training set does not have is an error naming its line."""
    index = {name: i for i, name in enumerate(classes)}
    for item in items:
        if item.label not in index:
            raise LabelsError(f"{csv_path} line {item.line}: label {item.label!r} is not among the training "
                              f"labels ({', '.join(classes)})")
    return [index[item.label] for item in items]


def list_unlabeled(folder: str | Path) -> list[Path]:
    """The videos and frame folders under `folder` (recursively, natural order); an empty folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelsError(f"unlabeled folder {folder} does not exist or is not a folder")
    sources = find_sources(folder)
    if not sources:
        raise LabelsError(f"unlabeled folder {folder} holds no videos or frame folders (e.g. the mp4 files of "
                          "`medsora sample`)")
    return sources
