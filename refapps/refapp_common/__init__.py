"""Code the reference apps share (not a refapp itself: it has no app.py).

Each refapp's ``app.py`` puts ``refapps/`` on ``sys.path`` and imports from
here, so the folder ``refapps/<slug>`` plus this package is all a refapp
needs:

* ``runner``: the stand-alone runner (``python app.py --engine E --port N``,
  prints ``ready addr=HOST:PORT``),
* ``contract``: the SPEC §3 contract endpoints every refapp serves the same
  way (``/healthz``, ``/echo``), path routing helpers, request-body readers,
* ``driver``: everything the three driver refapps (postgres, redis,
  memcached) share: configuration, the I-DRV-1 self-check tally, signed
  sessions kept in the backend, the key/value contract routes, the rate
  limiter middleware, ``/debug/vars`` and the lifespan.
"""
