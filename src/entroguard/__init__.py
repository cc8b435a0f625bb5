"""entroguard: measure and defend the bit rate of entropy-coded split DNNs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from entroguard.models.split import SplitClassifier


def load(name_or_path: str | Path) -> SplitClassifier:
    """A shipped zoo model by name (``"resnet_s-mshp-beta0.01"``) or a checkpoint by path,
    ready to code (eval mode, coder tables loaded, fingerprint checked). A slimmable model's
    name may end in a setting, ``"resnet_s-slim-mshp@m2,r1"`` (members, rate).

    Raises ``CheckpointError`` naming the closest zoo models when ``name_or_path`` is neither.

    Example:
        >>> import entroguard
        >>> model = entroguard.load("resnet_s-mshp-beta0.01")
        >>> packets = model.to_packets(images)  # images (B, 3, 32, 32) in [0, 1]
        >>> logits = model.from_packets(packets)
    """
    import difflib

    from entroguard.errors import CheckpointError
    from entroguard.models.slimmable import apply_setting, split_setting_name
    from entroguard.train.checkpoint import checkpoint_paths, load_checkpoint
    from entroguard.train.zoo import list_zoo

    zoo = {row["name"]: row["path"] for row in list_zoo()}
    key, setting = split_setting_name(str(name_or_path))
    for candidate in (zoo.get(key), key):
        if candidate is not None and checkpoint_paths(candidate)[1].is_file():
            model = load_checkpoint(candidate)
            apply_setting(model, setting, key)
            return model
    close = difflib.get_close_matches(key, zoo, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `entroguard zoo` lists them"
    raise CheckpointError(f"{key!r} is neither a zoo model nor a checkpoint path{hint}")
