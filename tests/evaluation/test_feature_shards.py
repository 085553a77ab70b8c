"""Evaluation's frozen features split across ranks: the split of the rows, and two processes (gloo)
that extract, resume and merge into the array one process makes."""

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from cfcl.config import config_hash
from cfcl.contrastive.encoders import load_encoder
from cfcl.distributed import rank_rows
from cfcl.evaluation.features import cached, extract_features, shard_file

BATCH = 16


@pytest.mark.parametrize("n", [0, 1, 7, 48, 50])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8, 64])
@pytest.mark.parametrize("unit", [1, 16])
def test_the_ranks_shares_cover_every_row_once_in_whole_batches(n, world_size, unit):
    shares = [rank_rows(n, r, world_size, unit) for r in range(world_size)]
    assert [row for share in shares for row in share] == list(range(n))
    assert all(share.start % unit == 0 for share in shares if len(share))
    batches = [-(-len(share) // unit) for share in shares]
    assert max(batches) - min(batches) <= 1  # balanced to within one batch, however many ranks


def test_how_many_ranks_share_the_extraction_leaves_the_evaluation_up_to_date():
    from cfcl.evaluation.config import EvaluateConfig

    assert config_hash(EvaluateConfig(trainer={"devices": 2})) == config_hash(EvaluateConfig())
    assert config_hash(EvaluateConfig(seeds=[0])) != config_hash(EvaluateConfig())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, root: str) -> None:
    """One rank: extracts two encoders' features (the second resumed), again the first (cached), and
    a cache of fewer rows than ranks have batches; records every extraction it made. Imports only
    what the extraction needs, so that the ranks start quickly."""
    from torch import distributed as dist

    from cfcl.distributed import Coordinator, Ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    coordinator = Coordinator(Ranks(rank, 2, rank, 0), dist.new_group(backend="gloo"))
    root = Path(root)
    images = np.load(root / "data" / "images.npy", mmap_mode="r")
    results = {}
    for label, name in (("fresh", "fresh"), ("resumed", "resumed"), ("again", "fresh")):  # name: the cache key
        encoder, calls = load_encoder(root / "pretrain" / name)[0], []

        def extract(rows, encoder=encoder, calls=calls):
            calls.append([rows.start, rows.stop])
            return extract_features(encoder, images[rows.start : rows.stop], BATCH)

        array = cached(root / "features", name, len(images), extract, BATCH, coordinator)
        results[label] = {"extracted": calls, "got_array": array is not None}
    short = cached(
        root / "features",
        "short",
        3,
        lambda rows: np.arange(rows.start, rows.stop, dtype=np.float32)[:, None],
        BATCH,
        coordinator,
    )
    results["short"] = short.tolist() if short is not None else None
    (root / f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_extract_their_shards_resume_one_and_merge_into_the_one_process_array(tmp_path):
    from support.evaluation import tiny_encoder, tiny_store

    store = tiny_store(tmp_path / "data")
    encoders = {
        name: load_encoder(tiny_encoder(tmp_path / "pretrain" / name, name, seed=0))[0] for name in ("fresh", "resumed")
    }
    single = {name: extract_features(encoder, store.images, BATCH) for name, encoder in encoders.items()}
    share0, share1 = (rank_rows(len(store), r, 2, BATCH) for r in range(2))
    # An interrupted run left rank 1's shard of the second encoder; marked, so a recomputed one would show.
    left = single["resumed"][share1.start : share1.stop] + 1000
    (tmp_path / "features").mkdir()
    np.save(shard_file(tmp_path / "features", "resumed", share1), left)

    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    assert [r["fresh"]["extracted"] for r in ranks] == [[[share0.start, share0.stop]], [[share1.start, share1.stop]]]
    np.testing.assert_allclose(np.load(tmp_path / "features" / "fresh.npy"), single["fresh"], rtol=1e-6, atol=1e-7)
    assert [r["fresh"]["got_array"] for r in ranks] == [True, False]
    assert [r["resumed"]["extracted"] for r in ranks] == [[[share0.start, share0.stop]], []]
    resumed = np.load(tmp_path / "features" / "resumed.npy")
    np.testing.assert_allclose(resumed[: share0.stop], single["resumed"][: share0.stop], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(resumed[share1.start :], left)
    assert [r["again"]["extracted"] for r in ranks] == [[], []]  # the merged file short-circuits every rank
    assert ranks[0]["short"] == [[0.0], [1.0], [2.0]] and ranks[1]["short"] is None  # rank 1 had no rows
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == ["fresh.npy", "resumed.npy", "short.npy"]
