"""The review app's routes, one module per group: the page and service endpoints
(:mod:`.service`), detection (:mod:`.detect`) and views of a detected scan (:mod:`.view`).
Each is an ``APIRouter`` whose routes take the app's :class:`~rarespot.serve.state.ServeState`
as a dependency; :func:`rarespot.serve.app.create_app` includes them."""
