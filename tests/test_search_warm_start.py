"""--init-elastic: every candidate of the search supernet starts as the elastic op's slice at its kernel and expand."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch
from random_bn import input_dependent_bn
from test_search_run import TINY

from search.cli import main
from search.elastic.space import ElasticSpace, get_elastic_space
from search.elastic.store import save_supernet
from search.elastic.supernet import ElasticSupernet
from search.gradient.supernet import Supernet
from search.gradient.warm_start import WarmStartError, init_from_elastic
from search.space import SPACES, get_space

SPACE = get_space("fmnist")
ELASTIC = get_elastic_space("fmnist")
ONE_EPOCH = [*TINY, "--epochs", "1"]  # test_search_run's tiny search, one epoch


@pytest.fixture(scope="module")
def elastic() -> ElasticSupernet:
    torch.manual_seed(0)
    net = ElasticSupernet(ELASTIC)
    images = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    input_dependent_bn(net, lambda x: net(x, ELASTIC.largest()), images)
    return net.eval()


def _paths(net: Supernet) -> list[list[int]]:
    rng = random.Random(0)
    uniform = [[j] * len(net.counts) for j in range(6)]  # every (kernel, expand) in every layer
    mixed = [[rng.randrange(6) for _ in net.counts] for _ in range(3)]
    skipping = [*mixed[0][:4], 6, *mixed[0][5:9], 6]  # the last layers of stages 2 and 4 skipped
    return [*uniform, *mixed, skipping]


def test_every_candidate_computes_the_elastic_op_at_its_kernel_and_expand(elastic: ElasticSupernet) -> None:
    torch.manual_seed(5)
    net = Supernet(SPACE)
    alpha = net.alpha.detach().clone()
    assert init_from_elastic(net, elastic) == sum(1 for cands in net.candidates for c in cands if not c.zero)
    assert torch.equal(net.alpha, alpha)
    net.eval()
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for path in _paths(net):
            logits = elastic(x, ELASTIC.subnet_of(SPACE.arch(net.blocks_of(path))))
            assert (logits - logits.mean(0)).abs().max() > 1e-3, path  # precondition: it depends on the image
            assert torch.allclose(net(x, path), logits, atol=1e-5, rtol=1e-4), path


def test_another_geometry_is_refused(elastic: ElasticSupernet) -> None:
    wider = replace(SPACES["fmnist"], name="wider", widths=(24, 40, 80, 112))
    other = ElasticSupernet(ElasticSpace("wider", wider, min_depths=(1, 1, 1, 1)))
    with pytest.raises(WarmStartError, match="layers"):
        init_from_elastic(Supernet(SPACE), other)
    with pytest.raises(WarmStartError, match="not in the elastic space"):
        init_from_elastic(Supernet(SPACE), ElasticSupernet(replace(ELASTIC, kernels=(3, 5))))


def test_a_search_starts_from_a_supernet_folder_and_bad_sources_exit_2(elastic, tmp_path, capsys) -> None:
    save_supernet(elastic, tmp_path / "elastic", {"note": "test"})
    assert main(["run", *ONE_EPOCH, "--init-elastic", str(tmp_path / "elastic"), "--out", str(tmp_path / "run")]) == 0
    search = json.loads((tmp_path / "run" / "arch.json").read_text())["extra"]["search"]
    assert search["init_elastic"] == str(tmp_path / "elastic")
    assert f"--init-elastic {tmp_path / 'elastic'}" in search["command"]
    capsys.readouterr()
    for args, message in [
        (["--init-elastic", str(tmp_path / "missing")], "no such folder"),
        (["--init-elastic", str(tmp_path / "elastic"), "--init-from", str(tmp_path / "x.pt")], "pass one"),
    ]:
        assert main(["run", *ONE_EPOCH, *args, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
