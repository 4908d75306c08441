"""Environment profiles on a hand-built case: sizes, popularity, user degree, time, feature means and shifts."""

from __future__ import annotations

import numpy as np
import pytest

from painvrl.data.dataset import GroundTruth, InteractionData
from painvrl.invariance.profile import environment_profile


def _data(timestamps: bool = True) -> InteractionData:
    # 3 users, 4 items; item 0 is in 3 positives, item 1 in 2, items 2 and 3 in one each
    train = np.array([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 2], [2, 3]])
    image = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.0]], dtype=np.float32)
    audio = np.ones((4, 1), dtype=np.float32)
    return InteractionData(name="tiny", n_users=3, n_items=4, train=train, val=np.array([[0, 2]]),
                           test=np.array([[1, 3]]), features={"image": image, "audio": audio},
                           train_timestamps=np.array([10.0, 20, 30, 40, 50, 60, 70]) if timestamps else None,
                           ground_truth=GroundTruth(train_env=np.array([0, 0, 0, 0, 1, 1, 1])))


def test_profile_of_a_hand_built_partition() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1])  # environment 1: (1,1), (2,2), (2,3)
    first, second, empty = environment_profile(_data(), labels, 3)
    assert (first["size"], second["size"], empty) == (4, 3, {"env": 2, "size": 0, "share": 0.0})
    assert first["share"] == pytest.approx(4 / 7)
    assert first["item_popularity"] == pytest.approx((3 + 3 + 3 + 2) / 4)
    assert second["item_popularity"] == pytest.approx((2 + 1 + 1) / 3)
    # user degrees 2, 2, 3
    assert first["user_degree"] == pytest.approx((2 + 2 + 3 + 2) / 4)
    assert first["time"] == pytest.approx(25.0) and second["time"] == pytest.approx(60.0)
    assert first["time_rank"] == pytest.approx(1.5 / 6) and second["time_rank"] == pytest.approx(5 / 6)
    # image block means: env 0 rows are items 0,0,0,1 -> mean vector (1, 0), mean value 0.5;
    # env 1 rows are items 1,2,3 -> (1/3, 4/3), mean value 5/6; overall (5/7, 4/7)
    assert first["feature_mean"]["image"] == pytest.approx(0.5)
    assert second["feature_mean"]["image"] == pytest.approx(5 / 6)
    assert first["feature_shift"]["image"] == pytest.approx(np.hypot(1 - 5 / 7, 4 / 7))
    assert first["feature_shift"]["audio"] == pytest.approx(0.0)
    assert first["true_env_share"] == [1.0, 0.0] and second["true_env_share"] == [0.0, 1.0]


def test_profile_without_timestamps_and_with_bad_labels() -> None:
    profile = environment_profile(_data(timestamps=False), np.zeros(7, dtype=np.int64), 1)
    assert "time" not in profile[0] and profile[0]["size"] == 7
    with pytest.raises(ValueError, match="labels"):
        environment_profile(_data(), np.zeros(5, dtype=np.int64), 2)
