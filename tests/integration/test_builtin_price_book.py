"""The built-in price book is a file: the database records each version of it that
priced anything, so a quote made under one still reads its prices after an upgrade,
and a file whose prices changed under the same version is refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfygate import bootstrap
from comfygate.adapters.db.sql_pricing import SqlPriceBookRepository, read_price_book_file
from comfygate.config import Settings
from comfygate.domain.errors import DuplicatePriceBookVersionError
from comfygate.domain.pricing_document import price_book_to_document

PERSON = {"capability": "colorize.person", "width": 800, "height": 600}


def _book_file(tmp_path: Path, version: str, person_base: int) -> Path:
    doc = price_book_to_document(read_price_book_file())
    doc["version"] = version
    doc["capabilities"]["colorize.person"]["base"] = person_base
    lines = [f'version = "{version}"', f'timezone = "{doc["timezone"]}"']
    for name, cap in doc["capabilities"].items():
        lines += [f'[capabilities."{name}"]', f"base = {cap['base']}"]
        lines += [f"minimum = {cap['minimum']}", 'coefficients = { megapixels = "2.0" }']
    path = tmp_path / f"{version}-{person_base}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _started(database_url: str, book: Path | None = None) -> bootstrap.Container:
    container = bootstrap.build(Settings(database_url=database_url, price_book_file=book))
    try:
        container.upgrade_database()
    except BaseException:
        container.close()
        raise
    return container


def test_an_upgraded_built_in_book_keeps_the_old_one_readable_and_edits_are_refused(
    database_url: str, tmp_path: Path
) -> None:
    first = _started(database_url, _book_file(tmp_path, "house-1", 10))
    quote = first.pricing.quotes.quote(**PERSON, account_id=None)
    assert (quote.tokens, quote.price_book_version) == (11, "house-1")
    first.close()
    with pytest.raises(DuplicatePriceBookVersionError, match="did not"):
        _started(database_url, _book_file(tmp_path, "house-1", 30))  # prices, same version
    later = _started(database_url, _book_file(tmp_path, "house-2", 30))
    try:
        assert later.pricing.quotes.quote(**PERSON).tokens == 31
        redeemed = later.pricing.quotes.redeem(quote_id=quote.quote_id, account_id=None, **PERSON)
        assert (redeemed.tokens, redeemed.price_book_version) == (11, "house-1")
        assert later.pricing.price_books.show(account_id=None).book.version == "house-2"
        recorded = SqlPriceBookRepository(later.engine).builtin("house-1")
        assert recorded == read_price_book_file(_book_file(tmp_path, "house-1", 10))
    finally:
        later.close()


def test_a_replaced_built_in_version_cannot_be_activated_again(
    database_url: str, tmp_path: Path
) -> None:
    """Activation once refused only the built-in version in use: ``house-1``, replaced
    by ``house-2``, could be stored with other prices. Jobs priced under the old file
    would then read them, and every start under ``house-2`` was refused."""
    _started(database_url, _book_file(tmp_path, "house-1", 10)).close()
    later = _started(database_url, _book_file(tmp_path, "house-2", 30))
    try:
        reused = price_book_to_document(read_price_book_file(_book_file(tmp_path, "house-1", 99)))
        with pytest.raises(DuplicatePriceBookVersionError, match="built-in"):
            later.pricing.price_books.activate(reused)
        assert later.pricing.price_books.history(account_id=None) == []
    finally:
        later.close()
    _started(database_url, _book_file(tmp_path, "house-2", 30)).close()  # still starts
