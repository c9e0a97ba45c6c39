"""Checks on the paper catalogue: completeness, uniqueness, valid values, lookups and the seed titles."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from thrifty.catalog import FIELDS, PAPERS, STATUSES, Paper, filter_papers, get_paper

_REPO = Path(__file__).resolve().parents[1]
_SEED_CANDIDATES = (
    Path("/work/shared/papers/seed-abstracts.txt"),
    _REPO.parent / "shared" / "papers" / "seed-abstracts.txt",
)


def _seed_titles(path: Path) -> list[str]:
    """Titles are the non-empty lines followed by an abstract (a long line); the rest is page noise."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line for line, nxt in zip(lines, lines[1:], strict=False) if len(line) < 300 <= len(nxt)]


def test_sixty_three_papers_with_unique_keys_titles_and_arxiv_ids():
    assert len(PAPERS) == 63
    assert len({p.key for p in PAPERS}) == 63
    assert len({p.title for p in PAPERS}) == 63
    ids = [p.arxiv for p in PAPERS if p.arxiv is not None]
    assert len(set(ids)) == len(ids)


def test_method_keys_unique_across_papers_and_first_is_key():
    names = [name for p in PAPERS for name in p.methods]
    assert len(names) == len(set(names))
    for p in PAPERS:
        assert p.methods[0] == p.key
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in p.methods), p.key


def test_fields_and_statuses_are_valid():
    assert FIELDS == (
        "optim",
        "schedules",
        "batching",
        "distributed",
        "compress",
        "nn",
        "diffusion",
        "threed",
        "serve",
        "data",
    )
    assert STATUSES == ("implemented", "partial", "planned")
    for p in PAPERS:
        assert p.field in FIELDS, p.key
        assert p.status in STATUSES, p.key


def test_arxiv_ids_well_formed():
    for p in PAPERS:
        assert p.arxiv is None or re.fullmatch(r"\d{4}\.\d{4,5}", p.arxiv), p.key


def test_import_paths_follow_the_house_layout():
    for p in PAPERS:
        assert re.fullmatch(r"thrifty(\.[a-z_][a-z0-9_]*)+:[A-Za-z_]\w*", p.import_path), p.key
        module = p.import_path.partition(":")[0]
        assert module.startswith(f"thrifty.{p.field}."), p.key
        assert module.rpartition(".")[2] in p.methods, p.key  # one module per method, named after it


def test_ordered_by_field_then_title():
    assert list(PAPERS) == sorted(PAPERS, key=lambda p: (FIELDS.index(p.field), p.title.casefold()))


def test_partial_entries_say_what_is_missing():
    for p in filter_papers(status="partial"):
        assert p.note.strip(), p.key


def test_implemented_entries_resolve_to_classes():
    implemented = filter_papers(status="implemented")
    assert implemented
    for p in implemented:
        assert inspect.isclass(p.resolve()), p.key


def test_get_paper_by_key_and_by_method():
    assert get_paper("soap").import_path == "thrifty.optim.soap:SOAP"
    assert get_paper("adamw8bit") is get_paper("adam8bit")
    assert get_paper("blockwise_quant").key == "adam8bit"
    for p in PAPERS:
        for name in p.methods:
            assert get_paper(name) is p


def test_get_paper_unknown_lists_valid_keys():
    with pytest.raises(KeyError, match="sarathi_serve"):
        get_paper("no_such_method")


def test_filter_papers():
    assert filter_papers() == list(PAPERS)
    assert sum(len(filter_papers(field=f)) for f in FIELDS) == 63
    assert sum(len(filter_papers(status=s)) for s in STATUSES) == 63
    assert [p.key for p in filter_papers(field="serve")] == ["batchllm", "sarathi", "sarathi_serve"]
    both = filter_papers(field="optim", status="implemented")
    assert {p.key for p in both} <= {p.key for p in filter_papers(field="optim")}
    assert all(p.field == "optim" and p.status == "implemented" for p in both)


@pytest.mark.parametrize("kwargs, valid", [({"field": "vision"}, "threed"), ({"status": "done"}, "planned")])
def test_filter_papers_rejects_bad_values(kwargs, valid):
    with pytest.raises(ValueError, match=valid):
        filter_papers(**kwargs)


def test_to_dict_round_trip():
    for p in PAPERS:
        d = p.to_dict()
        assert isinstance(d["methods"], list)
        assert Paper(**{**d, "methods": tuple(d["methods"])}) == p


def test_titles_match_the_seed_list():
    seed = next((path for path in _SEED_CANDIDATES if path.is_file()), None)
    if seed is None:
        pytest.skip("seed-abstracts.txt is not available on this machine")
    titles = _seed_titles(seed)
    assert len(titles) == 63
    assert set(titles) == {p.title for p in PAPERS}


def test_every_built_method_names_what_it_is_checked_against():
    from thrifty.catalog import REFERENCES

    fixtures = Path(__file__).resolve().parent / "optim" / "fixtures"
    for p in PAPERS:
        assert p.reference in REFERENCES, p.key
        assert (p.reference == "none yet") == (p.status == "planned"), p.key
        if p.reference == "official code":  # figures from running the official code are stored as fixtures
            assert (fixtures / f"{p.key}_official.json").is_file(), p.key
