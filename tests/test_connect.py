"""How the actor pool is sized from the cluster's resources."""

from cluster.connect import actor_resources


def test_one_actor_per_gpu_never_more():
    assert actor_resources({"CPU": 16, "GPU": 4}, None) == (4, {"num_cpus": 1.0, "num_gpus": 1})
    assert actor_resources({"CPU": 16, "GPU": 2}, 8)[0] == 2
    assert actor_resources({"CPU": 16, "GPU": 4}, 1)[0] == 1


def test_cpu_actors_share_the_cpus_with_fixed_threads():
    assert actor_resources({"CPU": 8}, None) == (8, {"num_cpus": 1.0})
    assert actor_resources({"CPU": 8}, None, threads=4) == (2, {"num_cpus": 4.0})
    n, request = actor_resources({"CPU": 2}, 3)
    assert n == 3 and abs(request["num_cpus"] - 2 / 3) < 1e-9  # fractional: all three fit
