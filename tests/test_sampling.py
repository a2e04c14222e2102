"""Tests of the P x K identity sampler: batch structure, epoch lengths, determinism, resume, DDP."""

import random
from collections import Counter

import numpy as np
import pytest
import torch

from canlib.data.sampling import PKSampler
from canlib.errors import ConfigError


def _pids(counts: list[int], *, shuffle_seed: int | None = None) -> list[int]:
    """Records of identity i repeated counts[i] times, optionally in shuffled record order."""
    pids = [pid for pid, n in enumerate(counts) for _ in range(n)]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(pids)
    return pids


# 11 identities with 3..9 images, records interleaved: 11 ids, 66 images.
COUNTS = [6, 9, 4, 5, 7, 8, 3, 6, 4, 9, 5]
PIDS = _pids(COUNTS, shuffle_seed=1)


def _ids_of(batch: list[int], pids: list[int]) -> list[int]:
    return [pids[i] for i in batch]


@pytest.mark.parametrize("epoch", ["identities", "images"])
def test_every_batch_is_p_distinct_ids_times_k(epoch):
    p, k = 3, 4
    sampler = PKSampler(PIDS, p=p, k=k, epoch=epoch, seed=5)
    for e in range(3):
        sampler.set_epoch(e)
        for batch in sampler:
            assert len(batch) == p * k
            ids = _ids_of(batch, PIDS)
            # K consecutive entries per identity, P distinct identities.
            blocks = [ids[j * k : (j + 1) * k] for j in range(p)]
            assert all(len(set(block)) == 1 for block in blocks)
            assert len({block[0] for block in blocks}) == p
            # K distinct records, or all of a short identity's images (id 6 has 3).
            for block, ident in zip(range(p), (b[0] for b in blocks)):
                records = batch[block * k : (block + 1) * k]
                assert len(set(records)) == min(k, COUNTS[ident])


def test_identity_epoch_length_and_each_id_drawn_once():
    # 11 ids, P=3: floor(11 / 3) = 3 steps, 9 ids drawn, 2 left over.
    sampler = PKSampler(PIDS, p=3, k=4, seed=0)
    assert len(sampler) == 3
    drawn_sets = []
    for e in range(6):
        sampler.set_epoch(e)
        batches = list(sampler)
        assert len(batches) == 3
        first_of_block = [_ids_of(b, PIDS)[j * 4] for b in batches for j in range(3)]
        assert len(first_of_block) == len(set(first_of_block)) == 9
        drawn_sets.append(frozenset(first_of_block))
    # The 2 dropped ids change from epoch to epoch.
    assert len(set(drawn_sets)) > 1


def test_identity_epoch_covers_all_ids_when_p_divides():
    pids = _pids([4] * 12)
    sampler = PKSampler(pids, p=4, k=2, seed=3)
    ids = sorted(_ids_of([i for b in sampler.batches(0) for i in b], pids)[::2])
    assert ids == list(range(12))


def test_market_sized_epoch_lengths():
    # Market-1501: 751 ids, 12,936 images; P=8, K=4.
    # 12,936 = 751 * 17 + 169: 169 ids with 18 images, 582 with 17.
    pids = _pids([18] * 169 + [17] * 582)
    assert len(pids) == 12936
    assert len(PKSampler(pids, p=8, k=4)) == 751 // 8 == 93
    assert len(PKSampler(pids, p=8, k=4, epoch="images")) == 12936 // 32 == 404


def test_images_epoch_length():
    # 66 images, P=3, K=4: floor(66 / 12) = 5 steps; P=2, K=2: floor(66 / 4) = 16.
    assert len(PKSampler(PIDS, p=3, k=4, epoch="images")) == 5
    sampler = PKSampler(PIDS, p=2, k=2, epoch="images", seed=2)
    assert len(sampler) == 16
    assert len(list(sampler)) == 16


def test_images_epoch_favours_identities_with_many_images():
    # id 0 has 40 images (10 chunks of 4), ids 1..8 four each (1 chunk): 72 images, P=2,
    # K=4, 9 steps. A pass over the images should show id 0 in most batches.
    pids = _pids([40] + [4] * 8)
    sampler = PKSampler(pids, p=2, k=4, epoch="images", seed=0)
    assert len(sampler) == 9
    appearances = Counter()
    for e in range(20):
        for batch in sampler.batches(e):
            appearances.update({pids[i] for i in batch})
    assert appearances[0] / 20 >= 7  # at most 9 (once per batch)
    assert max(appearances[i] for i in range(1, 9)) / 20 <= 2.5


def test_images_epoch_uses_each_image_about_once():
    # 8 ids x 8 images, P=2, K=4: 8 steps, 64 slots for 64 images.
    pids = _pids([8] * 8)
    sampler = PKSampler(pids, p=2, k=4, epoch="images", seed=7)
    for e in range(5):
        uses = Counter(i for b in sampler.batches(e) for i in b)
        assert sum(uses.values()) == 64
        assert sum(1 for n in uses.values() if n == 1) >= 48


def test_short_identity_uses_all_its_images_then_draws_with_replacement():
    # id 0 has 2 images, id 1 has 1; K=4 slots are filled from the identity's own images.
    pids = _pids([2, 1, 6, 6])
    sampler = PKSampler(pids, p=4, k=4, seed=0)
    own = {pid: {i for i, q in enumerate(pids) if q == pid} for pid in range(4)}
    for e in range(10):
        (batch,) = sampler.batches(e)
        blocks = {pids[batch[j * 4]]: batch[j * 4 : (j + 1) * 4] for j in range(4)}
        assert set(blocks) == {0, 1, 2, 3}
        for pid, block in blocks.items():
            assert set(block) <= own[pid]
        assert set(blocks[0]) == own[0]  # both images present, with repeats
        assert blocks[1] == [2] * 4  # record 2 is id 1's only image


def test_same_seed_and_epoch_give_same_batches_and_others_differ():
    a = PKSampler(PIDS, p=3, k=2, seed=11)
    b = PKSampler(PIDS, p=3, k=2, seed=11)
    c = PKSampler(PIDS, p=3, k=2, seed=12)
    assert a.batches(4) == b.batches(4)
    assert a.batches(4) != a.batches(5)
    assert a.batches(4) != c.batches(4)


def test_sampler_leaves_global_rngs_alone():
    np_state = np.random.get_state()[1].copy()
    py_state = random.getstate()
    torch_state = torch.get_rng_state().clone()
    sampler = PKSampler(PIDS, p=3, k=4, epoch="images", seed=0)
    list(sampler)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert random.getstate() == py_state
    assert torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.parametrize("epoch", ["identities", "images"])
@pytest.mark.parametrize("step", [0, 1, 3, 5])
def test_resume_yields_exactly_the_remaining_batches(epoch, step):
    fresh = PKSampler(PIDS, p=2, k=3, epoch=epoch, seed=9)
    fresh.set_epoch(2)
    full = list(fresh)
    resumed = PKSampler(PIDS, p=2, k=3, epoch=epoch, seed=9)
    resumed.set_position(2, step)
    assert list(resumed) == full[step:]
    resumed.set_epoch(3)
    fresh.set_epoch(3)
    assert list(resumed) == list(fresh)


def test_resume_at_the_end_yields_nothing():
    sampler = PKSampler(PIDS, p=2, k=3, seed=9)
    sampler.set_position(1, len(sampler))
    assert list(sampler) == []


@pytest.mark.parametrize("epoch", ["identities", "images"])
@pytest.mark.parametrize("world_size", [2, 4])
def test_distributed_shares_are_disjoint_and_union_is_single_process_batch(epoch, world_size):
    p, k = 4, 2
    single = PKSampler(PIDS, p=p, k=k, epoch=epoch, seed=4)
    ranks = [
        PKSampler(PIDS, p=p, k=k, epoch=epoch, seed=4, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    assert all(len(s) == len(single) for s in ranks)
    for e in range(3):
        for step, batch in enumerate(single.batches(e)):
            shares = [s.batches(e)[step] for s in ranks]
            assert all(len(share) == p // world_size * k for share in shares)
            id_sets = [set(_ids_of(share, PIDS)) for share in shares]
            assert sum(len(ids) for ids in id_sets) == p  # disjoint identities
            assert sorted(i for share in shares for i in share) == sorted(batch)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p": 0}, "p must be a positive integer"),
        ({"k": 0}, "k must be a positive integer"),
        ({"p": 2.0}, "p must be a positive integer"),
        ({"p": 12}, r"p must not exceed .* \(got p=12, 11 identities\)"),
        ({"epoch": "steps"}, r"\['identities', 'images'\]"),
        ({"seed": -1}, "seed must be a non-negative"),
        ({"p": 3, "world_size": 2}, r"divisible by world_size .*\(got p=3, world_size=2\)"),
        ({"p": 4, "world_size": 2, "rank": 2}, r"rank must be an integer in \[0, 2\)"),
        ({"world_size": 0}, "world_size must be a positive integer"),
    ],
)
def test_bad_parameters_raise_config_error(kwargs, match):
    params = {"p": 2, "k": 2} | kwargs
    with pytest.raises(ConfigError, match=match):
        PKSampler(PIDS, **params)


@pytest.mark.parametrize(
    ("pids", "match"),
    [
        ([], "non-empty 1-D"),
        ([[0, 1], [1, 0]], "non-empty 1-D"),
        ([0.0, 1.0], "must be integers"),
        ([3, 3, 3], "at least 2 training identities, got 1"),
    ],
)
def test_bad_pids_raise_config_error(pids, match):
    with pytest.raises(ConfigError, match=match):
        PKSampler(pids, p=1, k=2)


def test_images_epoch_with_too_few_images_raises():
    # 3 images < P * K = 8: zero steps.
    with pytest.raises(ConfigError, match="0 steps"):
        PKSampler([0, 1, 1], p=2, k=4, epoch="images")


def test_bad_position_raises():
    sampler = PKSampler(PIDS, p=3, k=2)
    with pytest.raises(ConfigError, match=r"step must be an integer in \[0, 3\]"):
        sampler.set_position(0, 4)
    with pytest.raises(ConfigError, match="epoch must be a non-negative"):
        sampler.set_epoch(-1)


def test_works_as_dataloader_batch_sampler():
    dataset = torch.arange(len(PIDS))
    sampler = PKSampler(PIDS, p=3, k=2, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    got = [batch.tolist() for batch in loader]
    assert got == sampler.batches(0)
