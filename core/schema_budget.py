"""The REST budget's ledger tables (schema migration 10, listed in :mod:`core.schema`).

Kept apart from :mod:`core.schema` for size only; pure SQL text like it. The ledger is used by
:mod:`workers.alpaca.budget_ledger` (docs/ingester.md, "REST budget").
"""

from __future__ import annotations

REST_LEDGER_STATEMENTS: tuple[str, ...] = (
    # One row per REST call started, by every process (ingester, manager, their
    # replicas) of every destination: the per-destination budget holds across them
    # (workers/alpaca/budget_ledger.py). Rows older than the window are pruned by the
    # function below; the table stays at a few hundred rows.
    """CREATE TABLE IF NOT EXISTS public.ch_rest_calls (
        destination text NOT NULL,
        base_url text NOT NULL,
        started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        holder text NOT NULL,
        priority smallint NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS ch_rest_calls_window
        ON public.ch_rest_calls (destination, base_url, started_at)""",
    # Check the sliding window and take a slot in one statement (one round trip): the
    # transaction advisory lock on the destination makes two processes queue here, so
    # they never both take the last slot. The database's clock is the one clock all
    # processes share. Returns whether a slot was taken, the ages (s) of the calls in the
    # window (ours included) and how many processes made them.
    """CREATE OR REPLACE FUNCTION public.ch_rest_take(
        p_destination text, p_base_url text, p_window_s double precision, p_limit integer,
        p_holder text, p_priority smallint,
        OUT taken boolean, OUT ages_s double precision[], OUT holders integer)
    LANGUAGE plpgsql AS $fn$
    DECLARE
        t timestamptz;
    BEGIN
        -- the two-key form: a key space apart from the single-key locks (workers/locks.py)
        PERFORM pg_advisory_xact_lock(hashtext('ch_rest_calls'), hashtext(p_destination || ' ' || p_base_url));
        t := clock_timestamp();
        DELETE FROM public.ch_rest_calls
            WHERE destination = p_destination AND base_url = p_base_url
              AND started_at < t - make_interval(secs => greatest(p_window_s, 60.0) * 2);
        taken := p_limit > 0 AND (SELECT count(*) FROM public.ch_rest_calls
            WHERE destination = p_destination AND base_url = p_base_url
              AND started_at > t - make_interval(secs => p_window_s)) < p_limit;
        IF taken THEN
            INSERT INTO public.ch_rest_calls (destination, base_url, started_at, holder, priority)
                VALUES (p_destination, p_base_url, t, p_holder, p_priority);
        END IF;
        SELECT coalesce(array_agg(extract(epoch FROM t - started_at)::double precision
                                  ORDER BY started_at), '{}'),
               count(DISTINCT holder)::integer
            INTO ages_s, holders
            FROM public.ch_rest_calls
            WHERE destination = p_destination AND base_url = p_base_url
              AND started_at > t - make_interval(secs => p_window_s);
    END
    $fn$""",
)
