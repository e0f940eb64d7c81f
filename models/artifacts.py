"""The factory's output folder as a typed contract: the one module that knows its file names and formats.

`models.factory.build` writes a folder through `ArtifactWriter`; every reader (the harness, `hil firmware`,
tests) loads it with `load_artifacts` and gets `VariantArtifact`s: paths, sizes, arena, TFLM status and
sha256. A model whose bytes no longer match the sha256 the factory recorded is refused, never measured.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.errors import ModelError

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MODELS_DIR = Path("artifacts/models")
METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"


def _tflite_name(variant: str) -> str:
    return f"{variant}.tflite"


def _outputs_name(variant: str) -> str:
    return f"{variant}.tflm-outputs.npy"


def _roc_name(variant: str) -> str:
    return f"{variant}-roc.png"


def _weights_name(recipe: str) -> str:
    return f"{recipe}-weights.png"


def _clean(value: Any) -> Any:
    """A JSON value from metrics.json with NaN (pandas' missing) turned into None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class VariantArtifact:
    """One built variant: its factory row and the files the factory wrote for it."""

    name: str
    folder: Path
    row: dict[str, Any] = field(repr=False)

    @property
    def recipe(self) -> str:
        return str(self.row.get("recipe") or self.name.split("-")[0])

    @property
    def mode(self) -> str:
        return str(self.row.get("mode") or self.name.rpartition("-")[2])

    @property
    def size_bytes(self) -> int:
        """Flatbuffer size in bytes."""
        return int(self.row["size_bytes"])

    @property
    def sha256(self) -> str | None:
        """sha256 of the flatbuffer as the factory wrote it."""
        return self.row.get("sha256")

    @property
    def tflm_ok(self) -> bool:
        """Whether TFLite Micro allocates the model (False: not deployable, `tflm_error` says why)."""
        return bool(self.row.get("tflm_ok"))

    @property
    def tflm_error(self) -> str | None:
        return self.row.get("tflm_error")

    @property
    def arena_bytes(self) -> int | None:
        """The smallest arena TFLM allocates the model in (bisection), None when not deployable."""
        value = self.row.get("arena_bytes")
        return None if value is None else int(value)

    @property
    def accuracy(self) -> float | None:
        """Top-1 on the test split through tf.lite, fraction 0-1."""
        value = self.row.get("accuracy")
        return None if value is None else float(value)

    @property
    def tflite(self) -> Path:
        """The `.tflite` file."""
        return self.folder / _tflite_name(self.name)

    @property
    def roc_plot(self) -> Path | None:
        """The per-class ROC curves (PNG), if the factory drew them."""
        path = self.folder / _roc_name(self.name)
        return path if path.is_file() else None

    @property
    def weights_plot(self) -> Path | None:
        """The recipe's weight histograms (PNG), if the factory drew them."""
        path = self.folder / _weights_name(self.recipe)
        return path if path.is_file() else None

    def model_bytes(self) -> bytes:
        """The flatbuffer, checked against the sha256 the factory recorded (a changed file is an error)."""
        try:
            data = self.tflite.read_bytes()
        except OSError as exc:
            raise ModelError(f"{self.tflite}: cannot read the model ({exc.strerror}); rebuild with "
                             f"`hil models build --out {self.folder}`") from None
        if self.sha256 and hashlib.sha256(data).hexdigest() != self.sha256:
            raise ModelError(
                f"{self.tflite}: the file changed after the factory built it (sha256 differs from "
                f"{METRICS_JSON}); rebuild with `hil models build --out {self.folder}`"
            )
        return data

    def host_outputs(self) -> np.ndarray | None:
        """The host TFLM runtime's outputs on the test split (what the device must reproduce), if any."""
        path = self.folder / _outputs_name(self.name)
        if not path.is_file():
            return None
        try:
            return np.load(path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: unreadable host outputs ({exc}); rebuild the variants") from None


    def snapshot(self) -> VariantSnapshot:
        """Everything of this variant read into memory at once (model checked against its sha256), so a
        rebuild of the folder by another run cannot change or remove it mid-measurement."""
        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        model = self.model_bytes() if self.tflm_ok else None
        return VariantSnapshot(self, model, self.host_outputs(), read(self.roc_plot), read(self.weights_plot))


@dataclass(frozen=True)
class VariantSnapshot:
    """A variant's files as they were when read (see `VariantArtifact.snapshot`)."""

    artifact: VariantArtifact
    model: bytes | None  # None when TFLM cannot run it
    host_outputs: np.ndarray | None
    roc_png: bytes | None
    weights_png: bytes | None


@dataclass(frozen=True)
class ArtifactSet:
    """A whole factory folder: its metadata and its variants in build order."""

    folder: Path
    meta: dict[str, Any]
    variants: dict[str, VariantArtifact]

    def __getitem__(self, name: str) -> VariantArtifact:
        if name not in self.variants:
            known = ", ".join(self.variants) or "(none)"
            raise ModelError(f"{self.folder}: no variant {name!r} built there (built: {known}); "
                             f"run `hil models build --only {name} --out {self.folder}`")
        return self.variants[name]

    def __contains__(self, name: object) -> bool:
        return name in self.variants

    def __iter__(self):
        return iter(self.variants.values())

    def __len__(self) -> int:
        return len(self.variants)

    @property
    def reference(self) -> str | None:
        """The registry's reference variant (the unoptimised model objectives are relative to)."""
        return self.meta.get("reference")

    def table(self) -> pd.DataFrame:
        """The metrics table (one row per variant), as the factory printed it."""
        import pandas as pd

        return pd.DataFrame([v.row for v in self.variants.values()])


def load_artifacts(folder: str | Path = DEFAULT_MODELS_DIR) -> ArtifactSet:
    """Read a folder written by `hil models build`; a missing or foreign folder is one ModelError line."""
    folder = Path(folder)
    path = folder / METRICS_JSON
    if not path.is_file():
        raise ModelError(f"{path}: no metrics; run `hil models build --out {folder}` first")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable ({exc}); rebuild with `hil models build --out {folder}`") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("variants"), list):
        raise ModelError(f"{path}: not a factory metrics file (expected {{'meta', 'variants'}}); "
                         f"rebuild with `hil models build --out {folder}`")
    variants = {}
    for raw in doc["variants"]:
        row = {k: _clean(v) for k, v in raw.items()}
        variants[str(row["variant"])] = VariantArtifact(str(row["variant"]), folder, row)
    return ArtifactSet(folder, dict(doc.get("meta") or {}), variants)


def is_artifact_folder(folder: str | Path) -> bool:
    """Whether `folder` holds a factory output (its metrics file)."""
    return (Path(folder) / METRICS_JSON).is_file()


class ArtifactWriter:
    """Writes a factory folder (the factory fills a temporary folder and swaps it in whole)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def model(self, variant: str, data: bytes) -> Path:
        """The `.tflite` and its C array (`model_<variant>.h/.cc`) for firmware builds."""
        from models.export import write_c_source

        path = self.folder / _tflite_name(variant)
        path.write_bytes(data)
        write_c_source(data, self.folder, "model_" + variant.replace("-", "_"))
        return path

    def host_outputs(self, variant: str, outputs: np.ndarray) -> None:
        """The host TFLM runtime's outputs on the test split."""
        np.save(self.folder / _outputs_name(variant), outputs)

    def roc_plot(self, variant: str, source: Path) -> None:
        shutil.copyfile(source, self.folder / _roc_name(variant))

    def weights_plot(self, recipe: str, source: Path) -> None:
        shutil.copyfile(source, self.folder / _weights_name(recipe))

    def metrics(self, table: pd.DataFrame, meta: dict[str, Any]) -> None:
        """`metrics.csv` and `metrics.json` ({"meta", "variants"}) from the factory's table."""
        table.to_csv(self.folder / METRICS_CSV, index=False)
        records = json.loads(table.to_json(orient="records"))
        (self.folder / METRICS_JSON).write_text(json.dumps({"meta": meta, "variants": records}, indent=1))

