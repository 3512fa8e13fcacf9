"""The web app, one folder a feature; each feature's router.py holds its routes (its API and its
pages), schemas.py their bodies, and a service module where there is logic beyond a route.

    traces      /explore, /gradients, /gates: what a model computes while it reads
    sampling    /sample: what it writes
    probes      /probe, /compare: concept probes, contexts, clamping, saliency, memory horizon
    matching    select a span, find the units that follow it, match them elsewhere
    groups      units factorised into groups that act together
    states      /states: state space and fixed points
    learn       /learn: the lecture's chapters
    baselines   /errors: n-gram baselines and the error analysis
    models      the models on offer (/ too), and imports from PyTorch
    training    /train: corpora, runs, the training worker and its store

What every feature shares: web/ (security, errors, OpenAPI, the page frame, assets, docs,
/healthz) and inference/ (the registry, the compute gate, batching, encodings, corpora,
caches, request checks). main.py assembles the features (feature.py says what each gives);
settings.py and cli.py serve them all. The maths is in rnnscope.model, which imports none of this.
"""
