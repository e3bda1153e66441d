"""Every use of a private scvi-tools name, in one place.

scvi-tools' public API does not cover three things this package needs; each is wrapped here
so that a change in scvi-tools breaks one function, and ``tests/test_compat.py`` fails on
both CI matrices (scvi-tools 1.4 and 1.5) when it does.
"""

from __future__ import annotations

#: Keys of the inference outputs of :class:`scvi.module.VAE` (``scvi.module._constants``).
QZ_KEY = "qz"
Z_KEY = "z"


def adata_minify_type(adata):
    """The minified-data type of ``adata`` (``None`` for full data), as scvi-tools reads it."""
    from scvi.data._utils import _get_adata_minify_type

    return _get_adata_minify_type(adata)


def n_train_cells(n_obs: int, train_size: float | None, validation_size: float | None,
                  batch_size: int) -> int:
    """Number of training cells scvi-tools' data splitter gives for these settings."""
    import warnings

    from scvi.dataloaders._data_splitting import validate_data_split

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the data splitter repeats its own warnings
        n_train, _ = validate_data_split(n_obs, 0.9 if train_size is None else float(train_size),
                                         validation_size, batch_size, False, train_size is None)
    return int(n_train)
