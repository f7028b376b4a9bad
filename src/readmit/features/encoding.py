"""The dense design matrix: numeric columns as they are, categoricals one-hot or target-encoded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from readmit.features.common import require_columns


class FeatureEncoder(TransformerMixin, BaseEstimator):
    """Dense float32 design matrix: numeric columns as they are, categoricals one-hot or
    target-encoded.

    One-hot: categories seen fewer than `min_frequency` times in fit, and unknown ones at
    transform time, share one `<column>=other` indicator, so the width never changes.
    Target encoding (`target_columns`, for codes with hundreds of values): the smoothed
    outcome rate of the category, `(positives + smoothing x prior) / (count + smoothing)`,
    the prior for unseen ones. Learned from labels, so `fit_transform` returns CROSS-FITTED
    encodings for the training rows (each row encoded by tables fitted without its fold; folds
    grouped by `groups`, the patient, when given) while `transform` uses tables fitted on all
    rows. Without that the model would learn from encodings that contain its own labels.

    The matrix is DENSE on purpose: XGBoost reads the zeros of a sparse matrix as missing, so
    a dense per-record vector would not reproduce a sparse pipeline's probabilities.

    Args:
        min_frequency: Minimum count of a category in fit to get its own indicator.
        target_columns: Categorical columns to target-encode instead of one-hot.
        smoothing: Pseudo-count of the prior in target encoding.
        n_splits: Folds of the cross-fitting in `fit_transform`.
    """

    def __init__(
        self,
        min_frequency: int = 100,
        target_columns: tuple[str, ...] = (),
        smoothing: float = 20.0,
        n_splits: int = 5,
    ) -> None:
        self.min_frequency = min_frequency
        self.target_columns = target_columns
        self.smoothing = smoothing
        self.n_splits = n_splits

    def fit(self, X: pd.DataFrame, y: Any = None) -> FeatureEncoder:
        """Learn column kinds, frequent categories and (with `y`) target-encoding tables."""
        categorical = [c for c in X.columns if X[c].dtype == object]
        absent = [c for c in self.target_columns if c not in categorical]
        if absent:
            raise ValueError(f"target_columns not among the categorical columns: {absent}")
        if self.target_columns and y is None:
            raise ValueError("target encoding needs the labels: fit(X, y)")
        self.target_columns_ = list(self.target_columns)
        self.categorical_columns_ = [c for c in categorical if c not in self.target_columns_]
        self.numeric_columns_ = [c for c in X.columns if c not in categorical]
        self.categories_: dict[str, list[str]] = {}
        for c in self.categorical_columns_:
            counts = pd.Series(X[c]).value_counts()
            self.categories_[c] = sorted(str(v) for v in counts.index[counts >= self.min_frequency])
        self._layout()
        self.prior_, self.target_maps_ = self._target_tables(X, y)
        return self

    def _layout(self) -> None:
        names = list(self.numeric_columns_)
        self.index_: dict[str, dict[str, int]] = {}
        self.other_index_: dict[str, int] = {}
        for c in self.categorical_columns_:
            self.index_[c] = {v: len(names) + i for i, v in enumerate(self.categories_[c])}
            names += [f"{c}={v}" for v in self.categories_[c]]
            self.other_index_[c] = len(names)
            names.append(f"{c}=other")
        self.target_index_ = {c: len(names) + i for i, c in enumerate(self.target_columns_)}
        names += [f"{c}=target_rate" for c in self.target_columns_]
        self.feature_names_out_ = np.asarray(names, dtype=object)

    def _target_tables(self, X: pd.DataFrame, y: Any) -> tuple[float, dict[str, dict[str, float]]]:
        """Smoothed outcome rate per category of each target column (and the prior)."""
        if not self.target_columns_:
            return 0.0, {}
        labels = np.asarray(y, dtype=np.float64)
        prior = float(labels.mean())
        maps = {}
        for c in self.target_columns_:
            stats = pd.DataFrame({"v": X[c].to_numpy(dtype=object), "y": labels}).groupby("v")["y"]
            sums, counts = stats.sum(), stats.count()
            rates = (sums + self.smoothing * prior) / (counts + self.smoothing)
            maps[c] = {str(k): float(v) for k, v in rates.items()}
        return prior, maps

    def fit_transform(
        self, X: pd.DataFrame, y: Any = None, groups: Any = None, **fit_params: Any
    ) -> np.ndarray:
        """Fit, then encode the SAME rows with cross-fitted target encodings (see class doc)."""
        self.fit(X, y)
        out = self.transform(X)
        if not self.target_columns_:
            return out
        from sklearn.model_selection import GroupKFold, KFold

        splitter = (
            GroupKFold(self.n_splits)
            if groups is not None
            else KFold(self.n_splits, shuffle=True, random_state=0)
        )
        labels = np.asarray(y)
        for fit_idx, enc_idx in splitter.split(out, labels, groups):
            prior, maps = self._target_tables(X.iloc[fit_idx], labels[fit_idx])
            for c in self.target_columns_:
                values = pd.Series(X[c].to_numpy(dtype=object)[enc_idx]).map(maps[c])
                out[enc_idx, self.target_index_[c]] = values.fillna(prior).to_numpy(np.float64)
        return out

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """float32 matrix (rows x `get_feature_names_out()`), NaN for missing numbers."""
        check_is_fitted(self, "feature_names_out_")
        needed = [*self.numeric_columns_, *self.categorical_columns_, *self.target_columns_]
        require_columns(X, needed)
        out = np.zeros((len(X), len(self.feature_names_out_)), dtype=np.float32)
        k = len(self.numeric_columns_)
        out[:, :k] = X[self.numeric_columns_].to_numpy(dtype=np.float64, na_value=np.nan)
        rows = np.arange(len(X))
        for c in self.categorical_columns_:
            idx = pd.Series(X[c].to_numpy(dtype=object)).map(self.index_[c])
            out[rows, idx.fillna(self.other_index_[c]).to_numpy(dtype=np.int64)] = 1.0
        for c in self.target_columns_:
            values = pd.Series(X[c].to_numpy(dtype=object)).map(self.target_maps_[c])
            out[:, self.target_index_[c]] = values.fillna(self.prior_).to_numpy(np.float64)
        return out

    def encode_record(self, features: Mapping[str, Any]) -> np.ndarray:
        """Per-record twin of `transform`: one float32 row from `EncounterFeatures` output."""
        numeric = self.numeric_columns_
        row = np.zeros(len(self.feature_names_out_), dtype=np.float32)
        row[: len(numeric)] = [features[c] for c in numeric]
        row[
            [
                self.index_[c].get(features[c], self.other_index_[c])
                for c in self.categorical_columns_
            ]
        ] = 1.0
        for c in self.target_columns_:
            row[self.target_index_[c]] = self.target_maps_[c].get(features[c], self.prior_)
        return row

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the design-matrix columns (`col=value` indicators, `col=target_rate`)."""
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_
