"""Training from the browser, top-down: each module imports only those listed after it.

    service         the Training service the routes share, its dependency and lifespan
    worker          the scheduler and a driver per running run: the store's only writer
    executors       where attempts run: this process's threads, or Ray (ray_executor)
    corpora         uploaded corpora: ingest, preflight, estimate
    attempt         one attempt at a run, pure: train() in, messages out
    store, schemas  the SQLite store and the data directory; the API's training models

The routes live with the others in app/routers (corpora, runs, train_page, imports).
"""
