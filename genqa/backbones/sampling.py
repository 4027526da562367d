"""Length-grouped batches that resume exactly.

genqa trains with `train_sampling_strategy: group_by_length` by default (`genqa.sft.apply_speed_defaults`). The
transformers sampler behind it (`LengthGroupedSampler`) draws its permutation from the *global* torch RNG when an
epoch starts; a run resumed from a checkpoint restores that RNG to its state at the checkpoint, so the resumed epoch
is permuted differently and the run no longer continues as the uninterrupted one would (seen in `tests/test_kill.py`:
losses diverged right after the resume point). `ResumableLengthGroupedSampler` draws the permutation from a generator
seeded with the run's data seed and the epoch instead, so every epoch's order is a function of (seed, epoch) and the
Trainer's own `skip_first_batches` lands on the same batches. `resumable_length_grouping` puts it into any Trainer
class (SFTTrainer, Seq2SeqTrainer, Trainer).
"""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler


class ResumableLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose permutation depends only on `seed` and the epoch (`set_epoch`)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer (through accelerate's data loader) before every epoch."""
        self.epoch = int(epoch)

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


def resumable_length_grouping(trainer_class: type) -> type:
    """A subclass of `trainer_class` whose length-grouped sampler is a `ResumableLengthGroupedSampler`."""

    class ResumableTrainer(trainer_class):
        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                return ResumableLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
            return sampler

    ResumableTrainer.__name__ = ResumableTrainer.__qualname__ = trainer_class.__name__
    return ResumableTrainer
