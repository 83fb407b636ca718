"""Text analysis for the lexical index: the same words for a product's text and a shopper's prompt.

Words are folded (accents dropped, case folded, apostrophes inside words removed, so "Levi's" and "levis" are
one word), split on anything that is not a letter or digit, stripped of a short list of English stop words and
stemmed with the Snowball English stemmer (the one PostgreSQL's ``english`` configuration uses), so "dresses"
finds "dress". Words with digits ("501", "a4") are kept as they are. The database indexes the analysed words
as plain text, so PostgreSQL and SQLite see exactly the same terms.
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache

import snowballstemmer

MAX_WORD = 40  # longer "words" are codes or garbage; they are cut
MAX_DOCUMENT_WORDS = 2000
MAX_QUERY_TERMS = 8  # each term is two index look-ups; a prompt's first eight distinct words are plenty
# characters Python calls letters that SQLite's FTS5 tokenizer (an older Unicode table) splits on
_FTS5_SEPARATORS = frozenset(chr(c) for c in range(0x19B0, 0x19CA))

STOP_WORDS = frozenset("""
a an and are as at be but by for from has have i in is it its me my of on or our so that the their them these
this those to was we were what which with without you your
""".split())

_TAGS = re.compile(r"<[^>]{0,2000}>")
_APOSTROPHE = re.compile(r"(?<=\w)['\u2019\u02bc](?=\w)")
_WORD = re.compile(r"[^\W_]+")
_stemmer = snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    if any(ch.isdigit() for ch in word):
        return word
    stemmed: str = _stemmer.stemWord(word)
    return stemmed


def words(text: str) -> list[str]:
    """The analysed terms of ``text`` in order (repeats kept), stop words dropped."""
    text = html.unescape(_TAGS.sub(" ", text))
    folded = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch)).casefold()
    folded = _APOSTROPHE.sub("", folded)
    out: list[str] = []
    for match in _WORD.finditer(folded):
        for word in _plain(match.group()):
            word = word[:MAX_WORD]
            if word in STOP_WORDS:
                continue
            out.append(_stem(word))
            if len(out) >= MAX_DOCUMENT_WORDS:
                return out
    return out


def _plain(run: str) -> list[str]:
    """A run of word characters cut into words that every engine sees whole: letters and decimal digits only
    (PostgreSQL's parser drops other numbers such as superscripts; FTS5 splits on a few letters)."""
    if run.isascii():
        return [run]
    words_in_run: list[str] = []
    current: list[str] = []
    for ch in run:
        if unicodedata.category(ch) in _KEPT and ch not in _FTS5_SEPARATORS:
            current.append(ch)
        elif current:
            words_in_run.append("".join(current))
            current = []
    if current:
        words_in_run.append("".join(current))
    return words_in_run


_KEPT = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"})


def query_terms(prompt: str) -> list[str]:
    """The distinct terms of a prompt, in the order they first appear (at most ``MAX_QUERY_TERMS``)."""
    return list(dict.fromkeys(words(prompt)))[:MAX_QUERY_TERMS]
