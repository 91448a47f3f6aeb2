"""Standard folds: which source video belongs to train, valid or test.

The CMU releases carry no split column; the community splits are the video-id lists of the
CMU-MultimodalSDK (``cmu_mosi_std_folds.py``, ``cmu_mosei_std_folds.py``). Two forms are read, from the
dataset folder or its ``Labels/`` folder:

* ``std_folds_train.txt``, ``std_folds_valid.txt``, ``std_folds_test.txt``: one video id per line;
* the SDK's own ``*_std_folds.py``: its ``standard_{train,valid,test}_fold`` list literals are parsed with
  ``ast`` and never executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

from features.errors import PipelineError
from features.types import SPLITS

FOLD_DIRS = (".", "Labels")
SPLIT_ALIASES = {
    "train": "train",
    "valid": "valid",
    "val": "valid",
    "dev": "valid",
    "validation": "valid",
    "test": "test",
}


class FoldError(PipelineError):
    """Fold lists that cannot be used: unreadable, incomplete, or a video in two folds."""


def normalise_split(value: str) -> str | None:
    """'dev', 'Val', ... -> 'valid'; None for a name that is no split."""
    return SPLIT_ALIASES.get(value.strip().lower())


def find_folds(root: Path) -> Path | None:
    """The fold source under a dataset folder: a folder holding std_folds_*.txt, or an SDK *_std_folds.py."""
    for sub in FOLD_DIRS:
        folder = root / sub
        if any((folder / f"std_folds_{s}.txt").is_file() for s in SPLITS):
            return folder  # an incomplete set is an error when read, not a reason to look elsewhere
        sdk = sorted(folder.glob("*_std_folds.py"))
        if sdk:
            return sdk[0]
    return None


def read_folds(source: Path) -> dict[str, str]:
    """video id -> split, from a std_folds_*.txt folder or an SDK fold module (see module docstring)."""
    lists = _read_sdk_module(source) if source.is_file() else _read_txt_folder(source)
    folds: dict[str, str] = {}
    for split, videos in lists.items():
        for video in videos:
            if folds.get(video, split) != split:
                raise FoldError(f"{source}: video {video!r} is in both the {folds[video]} and the {split} fold")
            folds[video] = split
    return folds


def _read_txt_folder(folder: Path) -> dict[str, list[str]]:
    lists = {}
    for split in SPLITS:
        path = folder / f"std_folds_{split}.txt"
        if not path.is_file():
            raise FoldError(f"{path}: missing (expected std_folds_train.txt, std_folds_valid.txt, std_folds_test.txt)")
        lists[split] = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lists


def _read_sdk_module(path: Path) -> dict[str, list[str]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as err:
        raise FoldError(f"{path}: not a Python fold module ({err})") from None
    lists: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            split = name.removeprefix("standard_").removesuffix("_fold")
            if name.startswith("standard_") and split in SPLITS:
                try:
                    lists[split] = [str(v) for v in ast.literal_eval(node.value)]
                except ValueError:
                    raise FoldError(f"{path}: {name} is not a literal list of ids") from None
    missing = [s for s in SPLITS if s not in lists]
    if missing:
        raise FoldError(f"{path}: no standard_{missing[0]}_fold list")
    return lists
