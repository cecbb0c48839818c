"""What the commands in ``policylm.jobs`` share: the job runner and run directories (``runs``)
and the Ray Train driver of the training jobs (``ray_train``). ``policylm.jobs`` holds the
commands only.
"""
