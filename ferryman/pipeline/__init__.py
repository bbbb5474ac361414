"""One input record's path through a migration, one module per stage, in flow order::

    pages.py      source pages in key order (RETRY ids first), minus succeeded and IGNORE ids
       |
    match.py      start_reduction, then for each Match: match_with_* -> a preloaded store
       |          (preload.py), one set query, or one query per distinct filter -> reduce_from_*
       |          once per page of matches
    transform.py  transform(aggregates, record) -> outputs, cardinality checked
       |
    save.py       outputs of many records per save_all; a failing batch is split (named duplicates
       |          apart, else in halves) until the failing records are found; handle_duplicate
    (ledger)      succeeded ids and failed records are recorded by the runner, page by page

``attempt.py`` runs match and transform for a batch (what the runner saves, and what a
verification replays). ``work.py`` holds :class:`Work`, the state of one record in one attempt, and :class:`Batch`
and :class:`Attempt`, the same for many records by column (while matched, then up to the save):
no Work is made for a record unless it fails or is saved alone. ``runner.py`` is the only
place that calls the stages in this order; it overlaps them across pages: the database saves
page n while page n+1 is read, matched and transformed (``Store.begin_save_all``).
``interpreter.py`` tunes CPython's garbage collector for a run's length.
"""
