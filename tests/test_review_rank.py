"""model.review: which chunk to label first - uncertainty near the icy threshold, spread over the image."""

import itertools

import numpy as np
import pytest

from model import review, rules


def grid(rows, cols):
    cells = list(itertools.product(range(rows), range(cols)))
    return [r for r, _ in cells], [c for _, c in cells]


def reference_ranks(probabilities, rows, cols, threshold, radius):
    """The rule done the slow, obvious way: every step rescans all unranked chunks (ties: first in order)."""
    score = review.uncertainty(probabilities, threshold)
    rows, cols = np.asarray(rows), np.asarray(cols)
    ranks = np.zeros(len(score), dtype=int)
    for rank in range(1, len(score) + 1):
        ranked = ranks > 0
        penalties = np.array([
            np.sum(ranked & (np.maximum(np.abs(rows - rows[i]), np.abs(cols - cols[i])) <= radius) & (np.arange(len(score)) != i))
            for i in range(len(score))
        ])
        current = np.where(ranked, -np.inf, score - review.NEIGHBOUR_PENALTY * penalties)
        ranks[int(np.argmax(current))] = rank
    return ranks


def test_a_chunk_at_the_threshold_ranks_above_confident_ones():
    # Far apart, so only uncertainty decides.
    ranks = review.review_ranks([0.02, 0.6, 0.99], [0, 0, 0], [0, 10, 20])
    assert ranks[1] == 1
    assert sorted(ranks) == [1, 2, 3]


def test_uncertainty_is_the_distance_from_the_threshold_on_the_logit_scale():
    u = review.uncertainty([0.6, 0.5, 0.7, 0.02, 0.001, 0.0, 1.0])
    assert u[0] == 0.0 and np.all(u[1:] < 0)
    assert u[1] == pytest.approx(-np.log(1.5))  # logit(0.6) = log(1.5), logit(0.5) = 0
    assert u[3] > u[4] > u[5]  # p = 0.02 and 0.001 stay apart; p = 0 is clipped, not infinite
    assert np.isfinite(u).all()


def test_isolated_chunks_rank_by_uncertainty_alone():
    probabilities = [0.9, 0.55, 0.1, 0.62, 0.3, 0.999]
    ranks = review.review_ranks(probabilities, [0] * 6, [0, 3, 6, 9, 12, 15])
    by_rank = [p for _, p in sorted(zip(ranks, probabilities))]
    assert by_rank == [0.62, 0.55, 0.3, 0.9, 0.1, 0.999]


def test_the_threshold_given_is_the_one_ranked_around():
    probabilities = [0.6, 0.3, 0.9]
    cols = [0, 5, 10]
    assert review.review_ranks(probabilities, [0, 0, 0], cols, threshold=0.3)[1] == 1
    assert review.review_ranks(probabilities, [0, 0, 0], cols, threshold=0.9)[2] == 1
    assert review.review_ranks(probabilities, [0, 0, 0], cols, threshold=rules.ICY_THRESHOLD)[0] == 1


def test_an_uncertain_patch_does_not_fill_the_top_of_the_list():
    # A 3 x 3 block at the threshold in one corner of a 10 x 10 image; elsewhere four lone chunks
    # a little less uncertain (p = 0.45, 0.6 logit from the threshold) and confident ones (p = 0.01).
    rows, cols = grid(10, 10)
    probabilities = np.full(100, 0.01)
    block = [r * 10 + c for r in range(3) for c in range(3)]
    corners = [0, 2, 20, 22]
    lone = [1 * 10 + 8, 5 * 10 + 5, 8 * 10 + 1, 8 * 10 + 8]
    probabilities[block] = 0.6
    probabilities[lone] = 0.45
    ranks = review.review_ranks(probabilities, rows, cols)
    by_rank = [int(i) for i in np.argsort(ranks)]
    # The block's corners touch no ranked chunk; its other chunks do, so the lone ones come next.
    assert by_rank[:4] == corners
    assert by_rank[4:8] == lone
    assert set(by_rank[8:12]) == {1, 10, 12, 21}  # the block's edges, before any confident chunk


def test_the_top_of_a_uniform_image_is_spread_out():
    rows, cols = grid(8, 8)
    ranks = review.review_ranks([0.6] * 64, rows, cols)
    top = [(rows[i], cols[i]) for i in np.argsort(ranks)[:16]]
    # 16 chunks, none of them next to another (diagonals included): every other row and column.
    assert all(max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= 2 for a, b in itertools.combinations(top, 2)), top


def test_the_radius_follows_overlapping_chunks():
    assert review.neighbour_radius(64, 64) == 1
    assert review.neighbour_radius(64, 32) == 2
    assert review.neighbour_radius(1024, 100) == 10
    assert review.neighbour_radius(64, 128) == 1
    # Two cells away is a neighbour at radius 2 (stride = chunk / 2: the windows overlap), not at radius 1.
    probabilities, rows, cols = [0.6, 0.59, 0.5], [0, 0, 0], [0, 2, 9]
    assert list(review.review_ranks(probabilities, rows, cols, radius=1)) == [1, 2, 3]
    assert list(review.review_ranks(probabilities, rows, cols, radius=2)) == [1, 3, 2]


@pytest.mark.parametrize("seed", range(6))
def test_ranks_are_a_permutation_equal_to_the_slow_rule(seed):
    rng = np.random.default_rng(seed)
    n_rows, n_cols = rng.integers(1, 9, size=2)
    rows, cols = grid(n_rows, n_cols)
    keep = rng.random(len(rows)) < 0.8  # no-data holes in the grid
    rows, cols = list(np.asarray(rows)[keep]), list(np.asarray(cols)[keep])
    # Rounded, so ties occur, as with the tables' 5-decimal probabilities.
    probabilities = np.round(rng.random(len(rows)), 1)
    radius = int(rng.integers(1, 3))
    ranks = review.review_ranks(probabilities, rows, cols, radius=radius)
    assert sorted(ranks) == list(range(1, len(rows) + 1))
    assert list(ranks) == list(reference_ranks(probabilities, rows, cols, rules.ICY_THRESHOLD, radius))


def test_deterministic_and_independent_of_input_order():
    rng = np.random.default_rng(7)
    rows, cols = grid(12, 15)
    probabilities = rng.random(len(rows))
    ranks = review.review_ranks(probabilities, rows, cols)
    assert list(review.review_ranks(probabilities, rows, cols)) == list(ranks)
    order = rng.permutation(len(rows))
    shuffled = review.review_ranks(probabilities[order], np.asarray(rows)[order], np.asarray(cols)[order])
    assert list(shuffled) == list(ranks[order])  # no ties here, so the chunk order does not matter


def test_no_chunks_and_mismatched_inputs():
    assert list(review.review_ranks([], [], [])) == []
    assert list(review.review_ranks([0.3], [4], [7])) == [1]
    with pytest.raises(ValueError, match="differ in length"):
        review.review_ranks([0.1, 0.2], [0], [0, 1])
