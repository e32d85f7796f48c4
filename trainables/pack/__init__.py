"""Packed trials: several LoRA configurations training together on one shared base model
(multilora.py: the multi-adapter layer and the members' weights; step.py: the packed optimizer step)."""

from trainables.pack.multilora import MemberSpec, MultiLoraLinear, PackedLora
from trainables.pack.step import concat_rows, packed_mean_loss, packed_train_step

__all__ = ["MemberSpec", "MultiLoraLinear", "PackedLora", "concat_rows", "packed_mean_loss", "packed_train_step"]
