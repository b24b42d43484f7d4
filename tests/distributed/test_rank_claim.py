"""Two processes that believe they are the same rank never write the same folder."""

from __future__ import annotations

from gradscope.record.launch import clear_earlier_run
from gradscope.record.rank_claim import CLAIMS, claim_rank_folder, process_rank


def test_second_claim_of_a_rank_gets_a_clash_folder_and_a_warning(tmp_path) -> None:
    assert claim_rank_folder(tmp_path, 0) == ("rank-0", None)
    assert claim_rank_folder(tmp_path, 1) == ("rank-1", None)
    folder, warning = claim_rank_folder(tmp_path, 0)
    assert folder.startswith("clash-rank-0-pid") and "already writes rank 0" in warning


def test_force_clears_the_claims(tmp_path) -> None:
    claim_rank_folder(tmp_path, 0)
    clear_earlier_run(tmp_path)
    assert not (tmp_path / CLAIMS).exists()
    assert claim_rank_folder(tmp_path, 0) == ("rank-0", None)


def test_rank_from_the_environment_without_a_process_group() -> None:
    assert process_rank(3, 4) == (3, 4)
