"""One module per job: python -m policylm.jobs.<name> --config F key=value ..."""
