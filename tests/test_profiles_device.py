import pytest
import torch

import adaedu
from adaedu.profiles import current_profile, sizes


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("ADAEDU_PROFILE", "cpu")
    assert current_profile() == "cpu"
    monkeypatch.setenv("ADAEDU_PROFILE", " Smoke ")
    assert current_profile() == "smoke"


def test_unset_profile_follows_cuda(monkeypatch):
    monkeypatch.delenv("ADAEDU_PROFILE", raising=False)
    assert current_profile() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_unknown_profile_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("ADAEDU_PROFILE", "laptop")
    with pytest.raises(ValueError, match="laptop.*smoke, cpu, gpu"):
        current_profile()


def test_sizes_picks_the_profile_and_shows_it(capsys):
    s = sizes(smoke=dict(n=1), cpu=dict(n=2), gpu=dict(n=3), profile="cpu")
    assert (s.n, s.profile) == (2, "cpu")
    assert "profile: cpu | n=2" in capsys.readouterr().out


def test_sizes_rejects_missing_keys():
    with pytest.raises(ValueError, match="'gpu'.*'m'"):
        sizes(smoke=dict(n=1), cpu=dict(n=2), gpu=dict(n=3, m=1), profile="cpu")
    with pytest.raises(ValueError, match="profile='fast'"):
        sizes(smoke=dict(n=1), cpu=dict(n=2), gpu=dict(n=3), profile="fast")


def test_device_is_cpu_here_and_bad_preference_is_rejected():
    dev = adaedu.get_device()
    assert dev.type in ("cpu", "cuda", "mps")
    assert adaedu.get_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="prefer='tpu'.*auto, cpu, cuda, mps"):
        adaedu.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            adaedu.get_device("cuda")


def test_seeding_makes_runs_repeatable():
    adaedu.seed_everything(7)
    a = torch.randn(5)
    adaedu.seed_everything(7)
    assert torch.equal(a, torch.randn(5))
    adaedu.seed_everything(8)
    assert not torch.equal(a, torch.randn(5))
    with pytest.raises(ValueError, match="seed"):
        adaedu.seed_everything(-1)
