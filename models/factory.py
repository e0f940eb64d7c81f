"""The variant factory: train each recipe, convert each variant, measure it, and write the artifact folder.

Everything expensive is cached under a content hash of (recipe config, data set fingerprint, package
versions), so a second build with nothing changed trains and converts nothing and never imports
TensorFlow. The output folder is written aside and swapped in whole: a failed build leaves no partial
artifacts that look valid.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import models
from models import datasets
from models.artifacts import DEFAULT_MODELS_DIR, ArtifactWriter, is_artifact_folder, load_artifacts
from models.errors import ModelError
from models.registry import DEFAULT_CONFIG, Registry, Variant, load_registry

CACHE_FORMAT = 1
METRICS_COLUMNS = (
    "variant", "recipe", "mode", "size_bytes", "gzip_bytes", "compression_ratio", "sparsity",
    "accuracy", "accuracy_tflm", "auc_macro", "agreement_vs_float", "cosine_vs_float",
    "tflm_ok", "tflm_error", "arena_bytes", "arena_reported_bytes", "host_latency_ms", "ops",
)  # fmt: skip
Progress = Callable[[str], None]


def _versions() -> dict[str, str]:
    found = {}
    for dist in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "tflite-micro"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "missing"
    return {"models": models.__version__, "cache_format": str(CACHE_FORMAT), **found}


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _atomic_dir(final: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary sibling folder, then rename it into place (a crash never leaves a half entry)."""
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class VariantArtifacts:
    """A built variant as stored in the cache."""

    variant: Variant
    folder: Path
    metrics: dict
    probs: np.ndarray | None
    probs_tflm: np.ndarray | None

    @property
    def tflite(self) -> Path:
        """The converted model file."""
        return self.folder / "model.tflite"

    @property
    def outputs(self) -> np.ndarray:
        """Output probabilities on the test split (tf.lite's, or TFLM's where tf.lite cannot load it)."""
        return self.probs if self.probs is not None else self.probs_tflm


@dataclass
class Factory:
    """Builds variants of one registry on one data set, with an on-disk cache."""

    registry: Registry
    dataset: datasets.Dataset
    cache_dir: Path
    progress: Progress = print
    timings: dict[str, float] = field(
        default_factory=lambda: {"train_s": 0.0, "convert_s": 0.0, "evaluate_s": 0.0}
    )
    _recipe_keys: dict[str, str] = field(default_factory=dict)
    _trained: dict[str, object] = field(default_factory=dict)
    _built: dict[str, VariantArtifacts] = field(default_factory=dict)
    build_seconds: dict[str, float] = field(default_factory=dict)  # variants built (not cached) in this run

    # ------------------------------------------------------------------ keys
    def recipe_key(self, name: str) -> str:
        """Content hash of everything a recipe's trained model depends on."""
        if name not in self._recipe_keys:
            cfg = self.registry.config
            recipe = cfg.recipes[name]
            payload = {
                "versions": _versions(),
                "dataset": self.dataset.fingerprint,
                "seed": cfg.seed,
                "model": cfg.model.model_dump(mode="json"),
                "recipe": recipe.model_dump(mode="json"),
            }
            if recipe.kind == "baseline":
                payload["training"] = cfg.training.model_dump(mode="json")
            else:
                payload["base"] = self.recipe_key(self.registry.baseline)
            self._recipe_keys[name] = _digest(payload)
        return self._recipe_keys[name]

    def variant_key(self, v: Variant) -> str:
        """Content hash of a variant: its recipe's key, the mode and the calibration set size."""
        return _digest(
            {
                "recipe": self.recipe_key(v.recipe),
                "mode": v.mode,
                "representative_samples": self.registry.config.representative_samples,
            }
        )

    # ------------------------------------------------------------------ training
    def trained(self, name: str):
        """The recipe's Keras model: from memory, from the cache, or trained now (and cached)."""
        if name in self._trained:
            return self._trained[name]
        from models import recipes
        from models.tf import keras, tfmot

        folder = self.cache_dir / "recipes" / self.recipe_key(name)
        model_file = folder / "model.h5"
        recipe = self.registry.config.recipes[name]
        if model_file.is_file():
            with tfmot().quantization.keras.quantize_scope():
                model = keras().models.load_model(model_file, compile=False)
        else:
            cfg = self.registry.config
            arch = cfg.model.model_dump()
            self.progress(f"  training recipe {name!r} ({recipe.kind}) ...")
            t0 = time.perf_counter()
            if recipe.kind == "baseline":
                train = {**cfg.training.model_dump(), "seed": cfg.seed}
                result = recipes.train_baseline(self.dataset, arch, train, self.progress)
            else:
                base = self.trained(self.registry.baseline)
                options = {**recipe.model_dump(), "seed": cfg.seed}
                if recipe.kind == "distilled":
                    options["student"] = recipe.student.model_dump()
                result = recipes.DERIVED[recipe.kind](base, self.dataset, arch, options, self.progress)
            elapsed = time.perf_counter() - t0
            self.timings["train_s"] += elapsed
            self.progress(f"  trained {name!r} in {elapsed:.1f} s")

            def fill(tmp: Path) -> None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the HDF5 format is "legacy" but loads everywhere
                    result.model.save(tmp / "model.h5", save_format="h5")
                (tmp / "info.json").write_text(json.dumps(result.info, indent=1))
                if result.weights_before is not None:
                    from models.plots import weight_histogram

                    weight_histogram(
                        result.weights_before,
                        result.weights_after,
                        f"{name}: Conv/Dense kernel weights before and after {recipe.kind}",
                        tmp / "weights.png",
                    )

            _atomic_dir(folder, fill)
            model = result.model
        self._trained[name] = model
        return model

    def recipe_info(self, name: str) -> dict:
        """What the recipe recorded while training (e.g. achieved sparsity), from the cache."""
        path = self.cache_dir / "recipes" / self.recipe_key(name) / "info.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def weights_plot(self, name: str) -> Path | None:
        """The recipe's weight histogram PNG, if it has one."""
        path = self.cache_dir / "recipes" / self.recipe_key(name) / "weights.png"
        return path if path.is_file() else None

    # ------------------------------------------------------------------ variants
    def representative(self) -> np.ndarray:
        """The calibration inputs: a seeded sample of the training split."""
        n = min(self.registry.config.representative_samples, len(self.dataset.x_train))
        rng = np.random.default_rng(self.registry.config.seed)
        return self.dataset.x_train[np.sort(rng.choice(len(self.dataset.x_train), n, replace=False))]

    def load_cached(self, v: Variant) -> VariantArtifacts | None:
        """The variant from the cache, or None if it was never built with this configuration."""
        folder = self.cache_dir / "variants" / self.variant_key(v)
        if not (folder / "metrics.json").is_file():
            return None
        probs = np.load(folder / "probs.npy") if (folder / "probs.npy").is_file() else None
        probs_tflm = np.load(folder / "probs_tflm.npy") if (folder / "probs_tflm.npy").is_file() else None
        return VariantArtifacts(
            v, folder, json.loads((folder / "metrics.json").read_text()), probs, probs_tflm
        )

    def variant(self, v: Variant) -> VariantArtifacts:
        """Build (or take from the cache) one variant: convert, evaluate, plot."""
        if v.name in self._built:
            return self._built[v.name]
        art = self.load_cached(v)
        if art is None:
            t0 = time.perf_counter()
            art = self._build_variant(v)
            self.build_seconds[v.name] = time.perf_counter() - t0
        self._built[v.name] = art
        return art

    def _build_variant(self, v: Variant) -> VariantArtifacts:
        from models.convert import convert, lut_compress
        from models.evaluate import evaluate
        from models.plots import roc_curves

        parent = self.variant(Variant(v.recipe, "int8")) if v.mode == "int8_lut" else None
        model = None if parent is not None else self.trained(v.recipe)
        t0 = time.perf_counter()
        if parent is not None:
            data = lut_compress(parent.tflite.read_bytes())
        else:
            data = convert(model, v.mode, self.representative())
        self.timings["convert_s"] += time.perf_counter() - t0
        t1 = time.perf_counter()
        ev = evaluate(data, self.dataset, tflite_loadable=parent is None)
        self.timings["evaluate_s"] += time.perf_counter() - t1
        metrics = {**ev.metrics, **self.recipe_info(v.recipe)}
        metrics["sha256"] = hashlib.sha256(data).hexdigest()
        if parent is not None:
            # tf.lite cannot load LUT-compressed models; the weights decompress bit-exactly, so the
            # host accuracy is the uncompressed parent's, and TFLM outputs are compared with the parent's.
            metrics["accuracy"] = parent.metrics["accuracy"]
            metrics["host_latency_ms"] = parent.metrics["host_latency_ms"]
            metrics["sparsity"] = parent.metrics["sparsity"]
            metrics["lut_bit_exact"] = bool(
                ev.probs_tflm is not None
                and parent.probs_tflm is not None
                and np.array_equal(ev.probs_tflm, parent.probs_tflm)
            )
        scored = ev.probs if ev.probs is not None else ev.probs_tflm

        def fill(tmp: Path) -> None:
            (tmp / "model.tflite").write_bytes(data)
            if ev.probs is not None:
                np.save(tmp / "probs.npy", ev.probs)
            if ev.probs_tflm is not None:
                np.save(tmp / "probs_tflm.npy", ev.probs_tflm)
            if scored is not None:
                roc_curves(
                    self.dataset.y_test,
                    scored,
                    self.dataset.class_names,
                    f"{v.name}: ROC per class",
                    tmp / "roc.png",
                )
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))

        folder = self.cache_dir / "variants" / self.variant_key(v)
        _atomic_dir(folder, fill)
        cached = self.load_cached(v)
        assert cached is not None
        return cached


def _row(f: Factory, art: VariantArtifacts, ref: VariantArtifacts) -> dict:
    from models.evaluate import agreement, mean_cosine

    m = dict(art.metrics)
    row = {"variant": art.variant.name, "recipe": art.variant.recipe, "mode": art.variant.mode, **m}
    row["compression_ratio"] = ref.metrics["size_bytes"] / m["size_bytes"]
    outputs = art.outputs
    row["agreement_vs_float"] = agreement(outputs, ref.outputs) if outputs is not None else math.nan
    row["cosine_vs_float"] = mean_cosine(outputs, ref.outputs) if outputs is not None else math.nan
    row["ops"] = " ".join(m["ops"])
    for c, value in enumerate(m.pop("auc_per_class")):
        row[f"auc_{f.dataset.class_names[c]}"] = value
    row.pop("auc_per_class", None)
    row["tflite_file"] = f"{art.variant.name}.tflite"
    return row


def _safe_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not is_artifact_folder(out):
        raise ModelError(
            f"{out}: exists and is not a model artifact folder (no metrics.json); choose another --out"
        )


def build(
    config: str | Path = DEFAULT_CONFIG,
    out: str | Path = DEFAULT_MODELS_DIR,
    data: str = "digits",
    only: list[str] | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: Progress = print,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> pd.DataFrame:
    """Build the selected variants, write `out` (tflite, C sources, plots, metrics), return the table."""
    t_start = time.perf_counter()
    registry = load_registry(config)
    selected = registry.select(only)
    out = Path(out)
    _safe_out(out)
    cache = Path(cache_dir) if cache_dir is not None else out.parent / "cache"
    ds = datasets.load(data, seed=registry.config.seed, limit_train=limit_train, limit_test=limit_test)
    progress(f"data set {ds.name}: {len(ds.x_train)} train, {len(ds.x_test)} test images; cache {cache}")
    factory = Factory(registry, ds, cache, progress)

    ref = factory.variant(registry.reference)
    built = []
    for i, v in enumerate(selected, 1):
        art = factory.variant(v)
        m = art.metrics
        seconds = factory.build_seconds.get(v.name)
        status = "cached" if seconds is None else f"built in {seconds:.1f} s"
        tflm = "TFLM ok" if m["tflm_ok"] else "not deployable on TFLM"
        progress(
            f"[{i:>2}/{len(selected)}] {v.name:<22} {status:<16} {m['size_bytes'] / 1024:8.1f} KB  "
            f"acc {m['accuracy']:.3f}  {tflm}"
        )
        built.append(art)

    rows = [_row(factory, art, ref) for art in built]
    table = pd.DataFrame(rows)
    leading = [c for c in METRICS_COLUMNS if c in table.columns]
    table = table[leading + [c for c in table.columns if c not in leading]]

    def fill(tmp: Path) -> None:
        write = ArtifactWriter(tmp)
        for art in built:
            write.model(art.variant.name, art.tflite.read_bytes())
            if art.probs_tflm is not None:  # host TFLM outputs on the test split: what a device should reproduce
                write.host_outputs(art.variant.name, art.probs_tflm)
            roc = art.folder / "roc.png"
            if roc.is_file():
                write.roc_plot(art.variant.name, roc)
        for recipe in dict.fromkeys(a.variant.recipe for a in built):
            plot = factory.weights_plot(recipe)
            if plot is not None:
                write.weights_plot(recipe, plot)
        meta = {"dataset": ds.name, "dataset_fingerprint": ds.fingerprint, "config": str(registry.path),
                "reference": registry.reference.name, "versions": _versions(),
                "aliases": dict(registry.config.aliases)}  # fmt: skip
        write.metrics(table, meta)

    _atomic_dir(out, fill)
    factory.timings["total_s"] = time.perf_counter() - t_start
    t = factory.timings
    progress(
        f"wrote {len(built)} variants to {out} in {t['total_s']:.1f} s "
        f"(training {t['train_s']:.1f} s, conversion {t['convert_s']:.1f} s, "
        f"evaluation {t['evaluate_s']:.1f} s)"
    )
    table.attrs["timings"] = dict(factory.timings)
    return table


def load_metrics(out: str | Path = DEFAULT_MODELS_DIR) -> pd.DataFrame:
    """The metrics table of a built artifact folder."""
    return load_artifacts(out).table()
