"""One module per ``python -m pipeline <command>``, named after it (``import-embeddings`` ->
``import_embeddings.py``): the stage's entry point, ``main``. The stages sit on top of the
libraries (``pipeline.data``, ``pipeline.models``, ``pipeline.training``, ``pipeline.evaluation``,
``pipeline.reporting``) and the planner (``pipeline.plan``); no library imports a stage.

DAG stages: download, synthesize, prepare, embed, import_embeddings, cluster, tune, train,
significance, aggregate. Tools: check (params and every planned model config), dvc_yaml (render
dvc.yaml from the plan), resolve_params (write a params overlay resolved), verify (retrain
committed runs and compare).
"""
